//! The file system on the attached device: probe, format when empty, mount, unmount.
//!
//! Probing reads the first 64 KiB: all zeroes is an empty device (formatted with `mkfs.<fs>`), an ext2/3/4 or XFS
//! superblock magic is a file system (mounted as it is), anything else is refused — never format a device that
//! holds something we do not recognise. Any block device works (the integration test uses a loop device).

use std::io::Read;
use std::path::Path;

use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};

use super::{AttachError, FsType, MountSpec};

/// How much of the device the probe reads.
pub const PROBE_LEN: usize = 64 * 1024;
/// ext2/3/4: `s_magic` (0xEF53, little-endian) at byte 56 of the superblock, which starts at byte 1024.
const EXT_MAGIC_AT: usize = 1024 + 56;
/// XFS: "XFSB" at byte 0.
const XFS_MAGIC: &[u8; 4] = b"XFSB";

/// What the start of a device holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Only zero bytes: never formatted.
    Empty,
    /// An ext2, ext3 or ext4 superblock (the ext4 driver mounts all three).
    Ext,
    Xfs,
    /// Non-zero bytes without a known superblock: another file system, a partition table, data.
    Unknown,
}

impl Probe {
    pub fn name(self) -> &'static str {
        match self {
            Probe::Empty => "nothing (zeroes)",
            Probe::Ext => "an ext2/3/4 file system",
            Probe::Xfs => "an XFS file system",
            Probe::Unknown => "unrecognised data",
        }
    }
}

/// Classify the first bytes of a device (pure).
pub fn probe_bytes(head: &[u8]) -> Probe {
    if head.len() >= 4 && &head[0..4] == XFS_MAGIC {
        return Probe::Xfs;
    }
    if head.len() >= EXT_MAGIC_AT + 2 && head[EXT_MAGIC_AT..EXT_MAGIC_AT + 2] == 0xEF53u16.to_le_bytes() {
        return Probe::Ext;
    }
    if head.iter().all(|b| *b == 0) { Probe::Empty } else { Probe::Unknown }
}

/// Read up to [`PROBE_LEN`] bytes of `device` and classify them (blocking).
pub fn probe_device(device: &Path) -> Result<Probe, AttachError> {
    let err = |source| AttachError::Probe { device: device.display().to_string(), source };
    let f = std::fs::File::open(device).map_err(err)?;
    let mut head = Vec::with_capacity(PROBE_LEN);
    f.take(PROBE_LEN as u64).read_to_end(&mut head).map_err(err)?;
    Ok(probe_bytes(&head))
}

/// Whether a probe result may be mounted as `fs`, formatted, or must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Mount,
    Format,
}

pub fn decide(device: &Path, fs: FsType, probe: Probe) -> Result<Action, AttachError> {
    match (probe, fs) {
        (Probe::Empty, _) => Ok(Action::Format),
        (Probe::Ext, FsType::Ext4) | (Probe::Xfs, FsType::Xfs) => Ok(Action::Mount),
        (found, _) => Err(AttachError::UnexpectedContent {
            device: device.display().to_string(),
            wanted: fs.name(),
            found: found.name(),
        }),
    }
}

/// The mkfs command line for `fs` on `device`.
pub fn mkfs_command(fs: FsType, device: &Path) -> (String, Vec<String>) {
    let dev = device.display().to_string();
    match fs {
        FsType::Ext4 => ("mkfs.ext4".into(), vec!["-q".into(), "-F".into(), dev]),
        FsType::Xfs => ("mkfs.xfs".into(), vec!["-q".into(), dev]),
    }
}

/// Format `device` with `fs`.
pub async fn mkfs(fs: FsType, device: &Path) -> Result<(), AttachError> {
    let (prog, args) = mkfs_command(fs, device);
    let command = format!("{prog} {}", args.join(" "));
    let out = tokio::process::Command::new(&prog)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| AttachError::Mkfs { command: command.clone(), detail: e.to_string() })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(AttachError::Mkfs { command, detail: format!("{}: {}", out.status, stderr.trim()) });
    }
    Ok(())
}

/// Mount `device` on the spec's mount point, creating the directory (blocking).
pub fn mount_device(device: &Path, spec: &MountSpec) -> Result<(), AttachError> {
    std::fs::create_dir_all(&spec.mount_point)
        .map_err(|source| AttachError::MountPoint { path: spec.mount_point.display().to_string(), source })?;
    let data = std::ffi::CString::new(spec.options.as_str()).map_err(|_| AttachError::Mount {
        device: device.display().to_string(),
        mount_point: spec.mount_point.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "mount options contain a NUL byte"),
    })?;
    let flags = if spec.read_only { MountFlags::RDONLY } else { MountFlags::empty() };
    let data = if spec.options.is_empty() { None } else { Some(data.as_c_str()) };
    rustix::mount::mount(device, &spec.mount_point, spec.fs.name(), flags, data).map_err(|e| AttachError::Mount {
        device: device.display().to_string(),
        mount_point: spec.mount_point.display().to_string(),
        source: std::io::Error::from(e),
    })
}

/// Unmount `mount_point` (blocking). `Ok(false)`: nothing was mounted there (EINVAL, ENOENT), so a repeated stop
/// succeeds. A busy file system is [`AttachError::UnmountBusy`]; it stays mounted.
pub fn unmount(mount_point: &Path) -> Result<bool, AttachError> {
    match rustix::mount::unmount(mount_point, UnmountFlags::empty()) {
        Ok(()) => Ok(true),
        Err(Errno::INVAL) | Err(Errno::NOENT) => Ok(false),
        Err(Errno::BUSY) => Err(AttachError::UnmountBusy { mount_point: mount_point.display().to_string() }),
        Err(e) => Err(AttachError::Unmount {
            mount_point: mount_point.display().to_string(),
            source: std::io::Error::from(e),
        }),
    }
}

/// Probe `device`, format it if empty, mount it. Returns whether it was formatted. Blocking steps run on the
/// blocking pool: the device may be served by an NBD export of this very process.
pub async fn prepare_and_mount(device: &Path, spec: &MountSpec) -> Result<bool, AttachError> {
    let dev = device.to_path_buf();
    let probe = blocking(move || probe_device(&dev)).await?;
    let formatted = match decide(device, spec.fs, probe)? {
        Action::Format => {
            mkfs(spec.fs, device).await?;
            true
        }
        Action::Mount => false,
    };
    let (dev, spec2) = (device.to_path_buf(), spec.clone());
    blocking(move || mount_device(&dev, &spec2)).await?;
    Ok(formatted)
}

/// Run a blocking step on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AttachError> + Send + 'static,
) -> Result<T, AttachError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| AttachError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroes_are_empty_and_other_bytes_unknown() {
        assert_eq!(probe_bytes(&vec![0u8; PROBE_LEN]), Probe::Empty);
        assert_eq!(probe_bytes(&[]), Probe::Empty);
        let mut data = vec![0u8; PROBE_LEN];
        data[PROBE_LEN - 1] = 1;
        assert_eq!(probe_bytes(&data), Probe::Unknown);
    }

    #[test]
    fn superblock_magics_are_recognised() {
        let mut ext = vec![0u8; PROBE_LEN];
        ext[0x438] = 0x53;
        ext[0x439] = 0xef;
        ext[2000] = 9;
        assert_eq!(probe_bytes(&ext), Probe::Ext);
        let mut xfs = vec![0u8; 4096];
        xfs[0..4].copy_from_slice(b"XFSB");
        assert_eq!(probe_bytes(&xfs), Probe::Xfs);
        assert_eq!(probe_bytes(&ext[..1081]), Probe::Unknown, "magic cut off");
    }

    #[test]
    fn only_empty_devices_are_formatted_and_a_foreign_file_system_is_refused() {
        let d = Path::new("/dev/nbd0");
        assert_eq!(decide(d, FsType::Ext4, Probe::Empty).expect("empty"), Action::Format);
        assert_eq!(decide(d, FsType::Ext4, Probe::Ext).expect("ext"), Action::Mount);
        assert_eq!(decide(d, FsType::Xfs, Probe::Xfs).expect("xfs"), Action::Mount);
        let e = decide(d, FsType::Xfs, Probe::Ext).expect_err("ext is not xfs");
        assert_eq!(e.code(), "TDM-ATT-012");
        assert!(e.to_string().contains("wipefs"), "{e}");
        assert!(decide(d, FsType::Ext4, Probe::Unknown).is_err());
    }

    #[test]
    fn mkfs_command_lines() {
        let d = Path::new("/dev/nbd3");
        assert_eq!(
            mkfs_command(FsType::Ext4, d),
            ("mkfs.ext4".into(), vec!["-q".into(), "-F".into(), "/dev/nbd3".into()])
        );
        assert_eq!(mkfs_command(FsType::Xfs, d), ("mkfs.xfs".into(), vec!["-q".into(), "/dev/nbd3".into()]));
    }

    #[test]
    fn unmounting_a_directory_that_is_no_mount_point_is_a_no_op() {
        let dir = tempfile::tempdir().expect("tempdir");
        if let Err(AttachError::Unmount { source, .. }) = unmount(dir.path())
            && source.kind() == std::io::ErrorKind::PermissionDenied
        {
            eprintln!("SKIP: umount2 needs root");
            return;
        }
        assert!(!unmount(dir.path()).expect("not mounted"));
        assert!(!unmount(&dir.path().join("missing")).expect("missing"));
    }

    #[tokio::test]
    async fn missing_mkfs_tool_is_reported_with_the_command() {
        // The file is not a device and has no file system: probing says Empty; mkfs.xfs is absent on some hosts,
        // present on others — either way the command line is in the outcome.
        let dir = tempfile::tempdir().expect("tempdir");
        let e = mkfs(FsType::Xfs, &dir.path().join("no-such-device")).await.expect_err("cannot format");
        assert_eq!(e.code(), "TDM-ATT-013");
        assert!(e.to_string().contains("mkfs.xfs -q"), "{e}");
    }
}
