//! `resource "mirror_disk"`: a block device replicated from the active node to the standby, mounted on the
//! active node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::choice::choice;
use crate::config::error::{ConfigPath, ErrorCode};
use crate::config::group::Group;
use crate::config::overrides;
use crate::config::parse::{self, Cx, Reader};
use crate::config::render::HclBlock;
use crate::config::validate::Validator;

choice!(
    /// File system on the data device.
    pub enum Filesystem {
        Ext4 = "ext4",
        Xfs = "xfs",
    }
);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorDisk {
    /// The data partition, e.g. `/dev/nvme1n1p2`.
    pub data_device: PathBuf,
    /// The cluster (metadata) partition: generations and the dirty bitmap, e.g. `/dev/nvme1n1p1`.
    pub metadata_device: PathBuf,
    /// Where the active node mounts the data (it attaches the export to /dev/nbdX first). None: the export is
    /// only served on its Unix socket, for a client that speaks NBD itself (qemu, a VM, a test).
    pub mount_point: Option<PathBuf>,
    /// Default ext4.
    pub filesystem: Filesystem,
    /// Per-node overrides (device names often differ between instance types).
    pub per_node: BTreeMap<String, MirrorDiskNode>,
}

/// What a mirror_disk may set per node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorDiskNode {
    pub data_device: Option<PathBuf>,
    pub metadata_device: Option<PathBuf>,
}

impl MirrorDisk {
    pub fn new(data_device: &str, metadata_device: &str, mount_point: &str) -> MirrorDisk {
        MirrorDisk {
            data_device: data_device.into(),
            metadata_device: metadata_device.into(),
            mount_point: Some(mount_point.into()),
            filesystem: Filesystem::Ext4,
            per_node: BTreeMap::new(),
        }
    }

    pub fn data_device_for(&self, node: &str) -> &Path {
        self.per_node.get(node).and_then(|o| o.data_device.as_deref()).unwrap_or(&self.data_device)
    }

    pub fn metadata_device_for(&self, node: &str) -> &Path {
        self.per_node.get(node).and_then(|o| o.metadata_device.as_deref()).unwrap_or(&self.metadata_device)
    }

    pub(crate) fn read(cx: &mut Cx, r: &mut Reader) -> Option<MirrorDisk> {
        let data_device = r.req(cx, "data_device", parse::path_buf);
        let metadata_device = r.req(cx, "metadata_device", parse::path_buf);
        let mount_point = r.opt(cx, "mount_point", parse::path_buf);
        let filesystem = r.or(cx, "filesystem", parse::choice::<Filesystem>, Filesystem::Ext4);
        let per_node = overrides::read(cx, r, |cx, or| {
            Some(MirrorDiskNode {
                data_device: or.opt(cx, "data_device", parse::path_buf),
                metadata_device: or.opt(cx, "metadata_device", parse::path_buf),
            })
        });
        Some(MirrorDisk {
            data_device: data_device?,
            metadata_device: metadata_device?,
            mount_point,
            filesystem,
            per_node: per_node?,
        })
    }

    pub(crate) fn render(&self, b: &mut HclBlock) {
        b.path("data_device", &self.data_device);
        b.path("metadata_device", &self.metadata_device);
        b.opt_path("mount_point", self.mount_point.as_deref());
        b.choice("filesystem", self.filesystem);
    }

    pub(crate) fn render_overrides(&self, b: &mut HclBlock) {
        overrides::render(b, &self.per_node, |ob, o| {
            ob.opt_path("data_device", o.data_device.as_deref());
            ob.opt_path("metadata_device", o.metadata_device.as_deref());
        });
    }

    pub(crate) fn validate(&self, v: &mut Validator, path: &ConfigPath, group: &Group) {
        v.abs_path(&path.attr("data_device"), &self.data_device);
        v.abs_path(&path.attr("metadata_device"), &self.metadata_device);
        if let Some(mount) = &self.mount_point {
            v.abs_path(&path.attr("mount_point"), mount);
        }
        if group.servers.len() != 2 {
            v.error(
                ErrorCode::NotApplicable,
                path,
                format!(
                    "{path}: a mirror disk replicates between exactly two servers; group {:?} has {}",
                    group.name,
                    group.servers.len()
                ),
            );
        }
        overrides::validate_nodes(v, path, &self.per_node, &group.servers);
        for (node, o) in &self.per_node {
            let opath = overrides::path(path, node);
            if let Some(p) = &o.data_device {
                v.abs_path(&opath.attr("data_device"), p);
            }
            if let Some(p) = &o.metadata_device {
                v.abs_path(&opath.attr("metadata_device"), p);
            }
        }
        for server in &group.servers {
            if self.data_device_for(server) == self.metadata_device_for(server) {
                let at = if self.per_node.contains_key(server) {
                    overrides::path(path, server)
                } else {
                    path.attr("metadata_device")
                };
                v.error(
                    ErrorCode::BadPath,
                    &at,
                    format!(
                        "{path}: on node {server:?} the data and metadata devices are both {}",
                        self.data_device_for(server).display()
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_can_differ_per_node() {
        let mut md = MirrorDisk::new("/dev/xvdf2", "/dev/xvdf1", "/mnt/data");
        md.per_node
            .insert("b".into(), MirrorDiskNode { data_device: Some("/dev/nvme1n1p2".into()), metadata_device: None });
        assert_eq!(md.data_device_for("a"), Path::new("/dev/xvdf2"));
        assert_eq!(md.data_device_for("b"), Path::new("/dev/nvme1n1p2"));
        assert_eq!(md.metadata_device_for("b"), Path::new("/dev/xvdf1"));
    }
}
