//! Attaching the mirror's NBD export to the kernel on the active node, and mounting its file system.
//!
//! 1. [`client`]: connect to the export's Unix socket and run the client side of the handshake (fixed newstyle,
//!    `NBD_OPT_GO`); the socket is then in the transmission phase.
//! 2. [`genl`] over [`netlink`]: hand that socket's fd to the kernel with the generic netlink `nbd` family's
//!    `NBD_CMD_CONNECT` (the kernel picks `/dev/nbdN` or uses the configured index), `NBD_CMD_DISCONNECT` to
//!    detach, `NBD_CMD_STATUS` to look.
//! 3. [`fs`]: probe the device, `mkfs.<fs>` when it is empty (all zeroes), mount it.
//!
//! [`attach_and_mount`] runs all three; [`Attached::unmount_and_detach`] undoes them. Machines without kernel NBD
//! are told apart by [`kernel_nbd_available`]. See docs/mirror.md ("Attaching on a real node").

pub mod client;
pub mod fs;
pub mod genl;
pub mod netlink;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use client::ExportInfo;
pub use netlink::DeviceStatus;

/// Why attaching, mounting, unmounting or detaching failed. Codes (`TDM-ATT-NNN`) are stable: never renumber,
/// only append.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(
        "TDM-ATT-001: generic netlink family {family:?} is not registered: this kernel has no NBD driver \
         (load it with `modprobe nbd`, or use a kernel with CONFIG_BLK_DEV_NBD)"
    )]
    FamilyNotFound { family: String },
    #[error("TDM-ATT-002: netlink {op} failed: {source}")]
    NetlinkIo { op: &'static str, source: std::io::Error },
    #[error("TDM-ATT-003: malformed netlink message from the kernel: {reason}")]
    NetlinkMalformed { reason: &'static str },
    #[error("TDM-ATT-004: the kernel refused {cmd}: {}{}", std::io::Error::from_raw_os_error(*errno),
        message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kernel { cmd: &'static str, errno: i32, message: Option<String> },
    #[error("TDM-ATT-005: no answer from the kernel to {cmd} within {timeout:?}")]
    NetlinkTimeout { cmd: &'static str, timeout: Duration },
    #[error("TDM-ATT-006: {cmd} needs CAP_SYS_ADMIN (run tandemd as root)")]
    NotPermitted { cmd: &'static str },
    #[error("TDM-ATT-007: connecting to the NBD export socket {path}: {source}")]
    ExportConnect { path: String, source: std::io::Error },
    #[error("TDM-ATT-008: NBD handshake failed: {reason}")]
    HandshakeProtocol { reason: String },
    #[error("TDM-ATT-009: the NBD server refused export {name:?} (reply {reply:#010x}): {message}")]
    ExportRefused { name: String, reply: u32, message: String },
    #[error("TDM-ATT-010: NBD handshake I/O failed: {0}")]
    HandshakeIo(std::io::Error),
    #[error("TDM-ATT-011: NBD handshake not finished within {:?}", client::HANDSHAKE_TIMEOUT)]
    HandshakeTimeout,
    #[error(
        "TDM-ATT-012: {device} holds {found}, not {wanted}; refusing to format it (if its content is disposable, \
         `wipefs -a {device}` and start again; otherwise fix the configured file system type)"
    )]
    UnexpectedContent { device: String, wanted: &'static str, found: &'static str },
    #[error("TDM-ATT-013: `{command}` failed: {detail}")]
    Mkfs { command: String, detail: String },
    #[error("TDM-ATT-014: creating the mount point {path}: {source}")]
    MountPoint { path: String, source: std::io::Error },
    #[error("TDM-ATT-015: mounting {device} on {mount_point}: {source}")]
    Mount { device: String, mount_point: String, source: std::io::Error },
    #[error("TDM-ATT-016: {mount_point} is busy; it stays mounted (see who uses it: `fuser -vm {mount_point}`)")]
    UnmountBusy { mount_point: String },
    #[error("TDM-ATT-017: unmounting {mount_point}: {source}")]
    Unmount { mount_point: String, source: std::io::Error },
    #[error("TDM-ATT-018: reading {device} to find its file system: {source}")]
    Probe { device: String, source: std::io::Error },
    #[error("TDM-ATT-019: {device} did not appear within {timeout:?} after the kernel attached it")]
    DeviceMissing { device: String, timeout: Duration },
    #[error("TDM-ATT-020: export of {size} bytes cannot be attached with block size {block_size}: {reason}")]
    ExportSize { size: u64, block_size: u32, reason: &'static str },
    #[error("TDM-ATT-021: attach task failed: {0}")]
    Task(String),
}

impl AttachError {
    /// The stable operator-facing code.
    pub fn code(&self) -> &'static str {
        match self {
            AttachError::FamilyNotFound { .. } => "TDM-ATT-001",
            AttachError::NetlinkIo { .. } => "TDM-ATT-002",
            AttachError::NetlinkMalformed { .. } => "TDM-ATT-003",
            AttachError::Kernel { .. } => "TDM-ATT-004",
            AttachError::NetlinkTimeout { .. } => "TDM-ATT-005",
            AttachError::NotPermitted { .. } => "TDM-ATT-006",
            AttachError::ExportConnect { .. } => "TDM-ATT-007",
            AttachError::HandshakeProtocol { .. } => "TDM-ATT-008",
            AttachError::ExportRefused { .. } => "TDM-ATT-009",
            AttachError::HandshakeIo(_) => "TDM-ATT-010",
            AttachError::HandshakeTimeout => "TDM-ATT-011",
            AttachError::UnexpectedContent { .. } => "TDM-ATT-012",
            AttachError::Mkfs { .. } => "TDM-ATT-013",
            AttachError::MountPoint { .. } => "TDM-ATT-014",
            AttachError::Mount { .. } => "TDM-ATT-015",
            AttachError::UnmountBusy { .. } => "TDM-ATT-016",
            AttachError::Unmount { .. } => "TDM-ATT-017",
            AttachError::Probe { .. } => "TDM-ATT-018",
            AttachError::DeviceMissing { .. } => "TDM-ATT-019",
            AttachError::ExportSize { .. } => "TDM-ATT-020",
            AttachError::Task(_) => "TDM-ATT-021",
        }
    }
}

/// The file systems tandem formats and mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Ext4,
    Xfs,
}

impl FsType {
    /// The kernel's name of the file system (`mount -t`).
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }
}

/// Where and how to attach and mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Created if missing.
    pub mount_point: PathBuf,
    pub fs: FsType,
    /// File system options passed to mount(2) (`-o`), e.g. `noatime` is a flag, not an option: use `""` or
    /// driver options such as `data=ordered`.
    pub options: String,
    pub read_only: bool,
    /// `/dev/nbd<index>`; `None` lets the kernel pick a free device (or create one).
    pub device_index: Option<u32>,
    /// Logical block size of the device: a power of two from 512 to the page size (4096).
    pub block_size: u32,
    /// Seconds before the kernel fails a request the export has not answered.
    pub io_timeout: Duration,
    /// Seconds the device waits for a lost connection to be replaced before failing I/O (0: fail at once).
    pub dead_conn_timeout: Duration,
}

impl MountSpec {
    /// Defaults: kernel-chosen device, 4096-byte blocks, read-write, no options, a 120 s request timeout (longer
    /// than writes are normally held while the peer is marked outdated), no dead-connection grace.
    pub fn new(mount_point: impl Into<PathBuf>, fs: FsType) -> Self {
        MountSpec {
            mount_point: mount_point.into(),
            fs,
            options: String::new(),
            read_only: false,
            device_index: None,
            block_size: 4096,
            io_timeout: Duration::from_secs(120),
            dead_conn_timeout: Duration::ZERO,
        }
    }
}

/// How long to wait for `/dev/nbdN` to appear (devtmpfs creates it when the kernel adds the disk).
pub const DEVICE_APPEAR_TIMEOUT: Duration = Duration::from_secs(5);

/// `/dev/nbd<index>`.
pub fn device_path(index: u32) -> PathBuf {
    PathBuf::from(format!("/dev/nbd{index}"))
}

/// Check the block size the kernel will accept and that the export holds at least one block.
pub fn check_size(size: u64, block_size: u32) -> Result<(), AttachError> {
    let err = |reason| Err(AttachError::ExportSize { size, block_size, reason });
    if !block_size.is_power_of_two() || !(512..=4096).contains(&block_size) {
        return err("the block size must be a power of two from 512 to 4096");
    }
    if size < u64::from(block_size) {
        return err("the export is smaller than one block");
    }
    Ok(())
}

/// Whether this machine can attach NBD devices; `Err` says why not (family missing, module not loaded, no module
/// support, netlink unusable).
pub fn kernel_nbd_available() -> Result<(), String> {
    match genl::NbdNetlink::open() {
        Ok(_) => Ok(()),
        Err(e @ AttachError::FamilyNotFound { .. }) => {
            let mut why = vec![e.to_string()];
            let has_nodes = std::fs::read_dir("/dev")
                .map(|d| d.flatten().any(|f| f.file_name().to_string_lossy().starts_with("nbd")))
                .unwrap_or(false);
            if !has_nodes {
                why.push("no /dev/nbd* device exists".into());
            }
            if !Path::new("/proc/modules").exists() {
                why.push("the kernel has no loadable module support, and nbd is not built in".into());
            } else if !Path::new("/sys/module/nbd").exists() {
                why.push("the nbd module is not loaded".into());
            }
            Err(why.join("; "))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Resolve a generic netlink family by name (e.g. `nlctrl`, `nbd`), with the module's timeout.
pub fn resolve_family(name: &str) -> Result<u16, AttachError> {
    genl::GenlSocket::open(genl::NETLINK_TIMEOUT)?.resolve_family(name)
}

/// The kernel's view of NBD devices (`NBD_CMD_STATUS`): one, or all of them.
pub async fn nbd_status(index: Option<u32>) -> Result<Vec<DeviceStatus>, AttachError> {
    fs::blocking(move || genl::NbdNetlink::open()?.status(index)).await
}

/// Handshake with the export on `sock` and hand the connection to the kernel. Returns the device index and what
/// the export said. The device node is not waited for.
pub async fn attach(sock: &Path, export: &str, spec: &MountSpec) -> Result<(u32, ExportInfo), AttachError> {
    let (stream, info) = client::connect_export(sock, export).await?;
    check_size(info.size, spec.block_size)?;
    let mut flags = u64::from(info.flags);
    if spec.read_only {
        flags |= u64::from(crate::mirror::nbd::proto::TFLAG_READ_ONLY);
    }
    let block_size = spec.block_size;
    let (index, timeout, dead) = (spec.device_index, spec.io_timeout, spec.dead_conn_timeout);
    let index = fs::blocking(move || {
        use std::os::fd::AsRawFd;
        let req = netlink::ConnectRequest {
            index,
            size_bytes: info.size,
            block_size: u64::from(block_size),
            server_flags: flags,
            timeout_secs: timeout.as_secs(),
            dead_conn_timeout_secs: dead.as_secs(),
            socket_fds: vec![stream.as_raw_fd() as u32],
        };
        let index = genl::NbdNetlink::open()?.connect(&req)?;
        // The kernel holds its own reference to the socket now; ours can go.
        drop(stream);
        Ok(index)
    })
    .await?;
    Ok((index, info))
}

/// `NBD_CMD_DISCONNECT` of `/dev/nbd<index>`: the kernel fails outstanding I/O and closes the connection.
pub async fn detach(index: u32) -> Result<(), AttachError> {
    fs::blocking(move || genl::NbdNetlink::open()?.disconnect(index)).await
}

fn wait_for_device(device: &Path) -> Result<(), AttachError> {
    let deadline = Instant::now() + DEVICE_APPEAR_TIMEOUT;
    while !device.exists() {
        if Instant::now() >= deadline {
            return Err(AttachError::DeviceMissing {
                device: device.display().to_string(),
                timeout: DEVICE_APPEAR_TIMEOUT,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// An attached and mounted export.
#[derive(Debug)]
pub struct Attached {
    index: u32,
    device: PathBuf,
    mount_point: PathBuf,
    export: ExportInfo,
    formatted: bool,
    mounted: bool,
    attached: bool,
}

impl Attached {
    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn device(&self) -> &Path {
        &self.device
    }

    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    pub fn export(&self) -> ExportInfo {
        self.export
    }

    /// True when this attach formatted the device (it was empty).
    pub fn formatted(&self) -> bool {
        self.formatted
    }

    /// Unmount, then detach. Idempotent and retryable: a busy file system (`TDM-ATT-016`) stays mounted and
    /// attached, and a later call picks up where this one stopped. The device is never detached while mounted.
    pub async fn unmount_and_detach(&mut self) -> Result<(), AttachError> {
        if self.mounted {
            let mp = self.mount_point.clone();
            fs::blocking(move || fs::unmount(&mp)).await?;
            self.mounted = false;
        }
        if self.attached {
            detach(self.index).await?;
            self.attached = false;
        }
        Ok(())
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if self.mounted || self.attached {
            tracing::warn!(
                device = %self.device.display(),
                mount_point = %self.mount_point.display(),
                "mirror device dropped while still mounted or attached; it stays so until stopped"
            );
        }
    }
}

/// Attach the export on `sock` as `/dev/nbdN`, format it if it is empty, and mount it on `spec.mount_point`. On
/// a failure after the attach, the device is detached again.
pub async fn attach_and_mount(sock: &Path, export: &str, spec: &MountSpec) -> Result<Attached, AttachError> {
    let (index, info) = attach(sock, export, spec).await?;
    let device = device_path(index);
    let dev = device.clone();
    let prepared = async {
        fs::blocking(move || wait_for_device(&dev)).await?;
        fs::prepare_and_mount(&device, spec).await
    }
    .await;
    match prepared {
        Ok(formatted) => Ok(Attached {
            index,
            device,
            mount_point: spec.mount_point.clone(),
            export: info,
            formatted,
            mounted: true,
            attached: true,
        }),
        Err(e) => {
            if let Err(d) = detach(index).await {
                tracing::warn!(code = d.code(), "detaching /dev/nbd{index} after a failed mount: {d}");
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_size_and_export_size_are_checked() {
        assert!(check_size(1 << 20, 4096).is_ok());
        assert!(check_size(512, 512).is_ok());
        for bs in [0, 256, 1000, 8192] {
            assert_eq!(check_size(1 << 20, bs).map_err(|e| e.code()), Err("TDM-ATT-020"), "block size {bs}");
        }
        assert!(check_size(4095, 4096).is_err());
    }

    #[test]
    fn spec_defaults_let_the_kernel_pick_the_device() {
        let s = MountSpec::new("/srv/data", FsType::Ext4);
        assert_eq!((s.device_index, s.block_size, s.read_only), (None, 4096, false));
        assert_eq!(device_path(3), PathBuf::from("/dev/nbd3"));
        assert_eq!(FsType::Xfs.name(), "xfs");
    }

    #[test]
    fn codes_are_distinct_in_order_and_lead_the_message() {
        let io = || std::io::Error::other("x");
        let all = [
            AttachError::FamilyNotFound { family: "nbd".into() },
            AttachError::NetlinkIo { op: "recv", source: io() },
            AttachError::NetlinkMalformed { reason: "r" },
            AttachError::Kernel { cmd: "NBD_CMD_CONNECT", errno: 16, message: None },
            AttachError::NetlinkTimeout { cmd: "c", timeout: Duration::from_secs(1) },
            AttachError::NotPermitted { cmd: "c" },
            AttachError::ExportConnect { path: "p".into(), source: io() },
            AttachError::HandshakeProtocol { reason: "r".into() },
            AttachError::ExportRefused { name: "n".into(), reply: 1, message: String::new() },
            AttachError::HandshakeIo(io()),
            AttachError::HandshakeTimeout,
            AttachError::UnexpectedContent { device: "d".into(), wanted: "ext4", found: "x" },
            AttachError::Mkfs { command: "c".into(), detail: "d".into() },
            AttachError::MountPoint { path: "p".into(), source: io() },
            AttachError::Mount { device: "d".into(), mount_point: "m".into(), source: io() },
            AttachError::UnmountBusy { mount_point: "/srv/data".into() },
            AttachError::Unmount { mount_point: "m".into(), source: io() },
            AttachError::Probe { device: "d".into(), source: io() },
            AttachError::DeviceMissing { device: "d".into(), timeout: Duration::from_secs(1) },
            AttachError::ExportSize { size: 0, block_size: 0, reason: "r" },
            AttachError::Task("t".into()),
        ];
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.code(), format!("TDM-ATT-{:03}", i + 1));
            assert!(e.to_string().starts_with(e.code()), "{e}");
        }
    }

    #[test]
    fn kernel_errors_name_the_errno_and_the_busy_hint_names_fuser() {
        let e = AttachError::Kernel { cmd: "NBD_CMD_CONNECT", errno: 16, message: Some("nbd0 in use".into()) };
        let text = e.to_string();
        assert!(text.contains("NBD_CMD_CONNECT") && text.contains("busy") && text.contains("nbd0 in use"), "{text}");
        let e = AttachError::UnmountBusy { mount_point: "/srv/data".into() };
        assert!(e.to_string().contains("fuser -vm /srv/data"));
    }
}
