//! The per-node `#cloud-config`: writes the rendered cluster config to /etc/tandem/cluster.hcl, the secrets
//! to /etc/tandem/secrets/ (mode 0600, directory 0700), two systemd units (tandem-fencer.service, then
//! tandemd.service, which requires it), and a bootstrap script that installs tandemd (from the AMI, an https URL
//! or an S3 object, optionally checked against a SHA-256) and starts both. Every file's content is base64 in the
//! YAML, so no value can break the document.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::model::SECRETS_DIR;

pub(super) const CONFIG_PATH: &str = "/etc/tandem/cluster.hcl";
pub(super) const TANDEMD_PATH: &str = "/usr/local/bin/tandemd";
const UNIT_PATH: &str = "/etc/systemd/system/tandemd.service";
const FENCER_UNIT_PATH: &str = "/etc/systemd/system/tandem-fencer.service";
/// The fencer's unit, as tandemd.service and the bootstrap name it (the file name of [`FENCER_UNIT_PATH`]).
const FENCER_UNIT: &str = "tandem-fencer.service";
/// tandemd's and the fencer's sockets live here; created by the fencer's unit (both units use it, so it is not a
/// `RuntimeDirectory=`, which systemd removes when the unit that owns it stops).
const RUN_DIR: &str = "/run/tandem";
/// The fencer's control socket: `tandemd fencer --socket` and `tandemd --fencer`.
const FENCER_SOCKET: &str = "/run/tandem/fencer.sock";
/// How long systemd waits for a watchdog ping (tandemd sends one every half of it) before it aborts tandemd.
const WATCHDOG_SEC: &str = "10s";
const BOOTSTRAP_PATH: &str = "/usr/local/lib/tandem/bootstrap.sh";
/// EC2 refuses user data above 16 KiB.
pub(super) const MAX_USER_DATA: usize = 16 * 1024;

/// Where tandemd comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    /// Already installed in the AMI at [`TANDEMD_PATH`].
    Ami,
    Https(String),
    S3 {
        bucket: String,
        key: String,
    },
}

impl Source {
    /// Parses `tandemd_source`: `ami`, `https://…` or `s3://bucket/key`. URLs may not contain quotes,
    /// backslashes, whitespace or control characters (they end up in a shell script).
    pub fn parse(text: &str) -> Result<Source, String> {
        if text == "ami" {
            return Ok(Source::Ami);
        }
        let unsafe_char = text.chars().find(|c| c.is_whitespace() || c.is_control() || "'\"\\`$".contains(*c));
        if let Some(c) = unsafe_char {
            return Err(format!("{text:?} contains {c:?}, which a download URL cannot contain here"));
        }
        if let Some(rest) = text.strip_prefix("https://") {
            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if host.is_empty() {
                return Err(format!("{text:?} has no host"));
            }
            return Ok(Source::Https(text.to_string()));
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            return match rest.split_once('/') {
                Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() && !key.ends_with('/') => {
                    Ok(Source::S3 { bucket: bucket.to_string(), key: key.to_string() })
                }
                _ => Err(format!("{text:?} is not s3://BUCKET/KEY of an object")),
            };
        }
        if text.starts_with("http://") {
            return Err(format!(
                "{text:?} is plain http: use https (or an s3:// path) so the binary cannot be swapped in transit"
            ));
        }
        Err(format!("{text:?} is not \"ami\", an https:// URL or an s3://bucket/key path"))
    }
}

/// Checks `tandemd_sha256`: 64 hex digits. Returns it in lower case.
pub(super) fn parse_sha256(text: &str) -> Result<String, String> {
    if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!("{text:?} is not a SHA-256 digest (64 hexadecimal digits)"))
    }
}

/// Everything one node's user_data holds.
pub(super) struct NodeFiles<'a> {
    pub cluster: &'a str,
    pub node: &'a str,
    pub config: &'a str,
    pub heartbeat_key: &'a str,
    pub ca_cert_pem: &'a str,
    pub node_cert_pem: &'a str,
    pub node_key_pem: &'a str,
}

fn file(out: &mut String, path: &str, permissions: &str, content: &str) {
    out.push_str(&format!(
        "  - path: {path}\n    owner: root:root\n    permissions: \"{permissions}\"\n    encoding: b64\n    content: {}\n",
        STANDARD.encode(content)
    ));
}

/// tandemd.service: `Type=notify` with a watchdog (tandemd pings while its heartbeat service runs), restarted
/// forever; it requires the fencer and starts after it.
fn unit(cluster: &str, node: &str) -> String {
    format!(
        "[Unit]\n\
         Description=tandem cluster daemon (cluster {cluster}, node {node})\n\
         Wants=network-online.target\n\
         Requires={FENCER_UNIT}\n\
         After=network-online.target {FENCER_UNIT}\n\
         # Never give up restarting tandemd: while it is down, {FENCER_UNIT} keeps the node safe.\n\
         StartLimitIntervalSec=0\n\
         \n\
         [Service]\n\
         Type=notify\n\
         NotifyAccess=main\n\
         ExecStart={TANDEMD_PATH} --config {CONFIG_PATH} --node {node} --fencer {FENCER_SOCKET}\n\
         # A hung tandemd stops its pings: systemd aborts it (SIGABRT) and restarts it.\n\
         WatchdogSec={WATCHDOG_SEC}\n\
         Restart=on-failure\n\
         RestartSec=2s\n\
         OOMScoreAdjust=-900\n\
         # A clean stop releases the groups and their leases before the OS goes down.\n\
         TimeoutStopSec=120s\n\
         KillMode=mixed\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// tandem-fencer.service: the small process that stops a group's processes when this node's right to run the
/// group ends, even while tandemd is dead or frozen; always restarted at once, hard to kill or starve.
fn fencer_unit() -> String {
    format!(
        "[Unit]\n\
         Description=tandem fencer (kills a group's processes when this node's right to run it ends, even if \
         tandemd is dead or frozen)\n\
         \n\
         [Service]\n\
         Type=simple\n\
         # Not RuntimeDirectory=: tandemd.service uses {RUN_DIR} too.\n\
         ExecStartPre=/bin/mkdir -p -m 0700 {RUN_DIR}\n\
         ExecStart={TANDEMD_PATH} fencer --socket {FENCER_SOCKET}\n\
         Restart=always\n\
         RestartSec=0\n\
         OOMScoreAdjust=-1000\n\
         Nice=-20\n\
         CPUSchedulingPolicy=rr\n\
         CPUSchedulingPriority=50\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

fn bootstrap(source: &Source, sha256: Option<&str>) -> String {
    let mut s = String::from("#!/bin/sh\n# Installs tandemd and starts it (written by tandem_cluster).\nset -eu\n");
    s.push_str(&format!("chmod 0700 {SECRETS_DIR}\n"));
    let download = format!("{TANDEMD_PATH}.download");
    match source {
        Source::Ami => {}
        Source::Https(url) => {
            s.push_str(&format!("curl -fsSL --proto '=https' --retry 5 --retry-connrefused -o {download} '{url}'\n"))
        }
        Source::S3 { bucket, key } => {
            s.push_str(&format!("aws s3 cp --only-show-errors 's3://{bucket}/{key}' {download}\n"));
        }
    }
    if *source != Source::Ami {
        if let Some(sum) = sha256 {
            s.push_str(&format!("echo '{sum}  {download}' | sha256sum -c -\n"));
        }
        s.push_str(&format!("chmod 0755 {download}\nmv -f {download} {TANDEMD_PATH}\n"));
    }
    s.push_str(&format!(
        "if [ ! -x {TANDEMD_PATH} ]; then echo 'tandem: {TANDEMD_PATH} is missing' >&2; exit 1; fi\n\
         systemctl daemon-reload\n\
         systemctl enable --now {FENCER_UNIT}\n\
         systemctl enable --now tandemd.service\n"
    ));
    s
}

/// The `#cloud-config` document of one node.
pub(super) fn render(files: &NodeFiles, source: &Source, sha256: Option<&str>) -> String {
    let mut out = format!(
        "#cloud-config\n# tandem cluster {:?}, node {:?} (written by the tandem_cluster resource)\nwrite_files:\n",
        files.cluster, files.node
    );
    file(&mut out, CONFIG_PATH, "0644", files.config);
    file(&mut out, &format!("{SECRETS_DIR}/heartbeat.key"), "0600", &format!("{}\n", files.heartbeat_key));
    file(&mut out, &format!("{SECRETS_DIR}/ca.crt"), "0600", files.ca_cert_pem);
    file(&mut out, &format!("{SECRETS_DIR}/node.crt"), "0600", files.node_cert_pem);
    file(&mut out, &format!("{SECRETS_DIR}/node.key"), "0600", files.node_key_pem);
    file(&mut out, FENCER_UNIT_PATH, "0644", &fencer_unit());
    file(&mut out, UNIT_PATH, "0644", &unit(files.cluster, files.node));
    file(&mut out, BOOTSTRAP_PATH, "0700", &bootstrap(source, sha256));
    out.push_str(&format!("runcmd:\n  - [/bin/sh, {BOOTSTRAP_PATH}]\n"));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn files() -> NodeFiles<'static> {
        NodeFiles {
            cluster: "web",
            node: "node-a",
            config: "cluster \"web\" {}\n",
            heartbeat_key: "a2V5",
            ca_cert_pem: "CA",
            node_cert_pem: "CERT",
            node_key_pem: "KEY",
        }
    }

    /// The (path, permissions, decoded content) of each write_files entry.
    fn written(doc: &str) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        let lines: Vec<&str> = doc.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if let Some(path) = line.strip_prefix("  - path: ") {
                let perm = lines[i + 2].trim().trim_start_matches("permissions: ").trim_matches('"');
                let b64 = lines[i + 4].trim().trim_start_matches("content: ");
                let content = String::from_utf8(STANDARD.decode(b64).unwrap()).unwrap();
                out.push((path.to_string(), perm.to_string(), content));
            }
        }
        out
    }

    #[test]
    fn user_data_writes_config_secrets_and_unit() {
        let doc = render(&files(), &Source::Ami, None);
        assert!(doc.starts_with("#cloud-config\n"));
        let w = written(&doc);
        let find = |p: &str| w.iter().find(|(path, ..)| path == p).unwrap().clone();
        assert_eq!(find("/etc/tandem/cluster.hcl").2, "cluster \"web\" {}\n");
        for secret in ["heartbeat.key", "ca.crt", "node.crt", "node.key"] {
            assert_eq!(find(&format!("/etc/tandem/secrets/{secret}")).1, "0600", "{secret}");
        }
        assert_eq!(find("/etc/tandem/secrets/node.key").2, "KEY");
        let unit = find("/etc/systemd/system/tandemd.service");
        assert_eq!(unit.1, "0644");
        assert!(has_line(
            &unit.2,
            "ExecStart=/usr/local/bin/tandemd --config /etc/tandem/cluster.hcl --node node-a \
             --fencer /run/tandem/fencer.sock"
        ));
        let fencer = find("/etc/systemd/system/tandem-fencer.service");
        assert_eq!(fencer.1, "0644");
        assert_eq!(fencer.2, fencer_unit());
        let script = find("/usr/local/lib/tandem/bootstrap.sh").2;
        assert!(!script.contains("curl") && script.contains("systemctl enable --now tandemd.service"));
        assert!(doc.ends_with("runcmd:\n  - [/bin/sh, /usr/local/lib/tandem/bootstrap.sh]\n"));
    }

    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    /// The lines of `section` (`[Unit]`, `[Service]`, …) of a unit file.
    fn section<'a>(unit: &'a str, section: &str) -> Vec<&'a str> {
        unit.lines().skip_while(|l| *l != section).skip(1).take_while(|l| !l.starts_with('[')).collect()
    }

    #[test]
    fn tandemd_unit_is_notify_with_watchdog_and_requires_the_fencer() {
        let unit = unit("web", "node-a");
        let u = section(&unit, "[Unit]");
        for line in [
            "Description=tandem cluster daemon (cluster web, node node-a)",
            "Wants=network-online.target",
            "Requires=tandem-fencer.service",
            "After=network-online.target tandem-fencer.service",
            "StartLimitIntervalSec=0",
        ] {
            assert!(u.contains(&line), "[Unit] lacks {line:?}:\n{unit}");
        }
        assert!(u.iter().any(|l| l.starts_with('#') && l.contains("tandem-fencer.service keeps the node safe")));
        let s = section(&unit, "[Service]");
        for line in [
            "Type=notify",
            "NotifyAccess=main",
            "ExecStart=/usr/local/bin/tandemd --config /etc/tandem/cluster.hcl --node node-a \
             --fencer /run/tandem/fencer.sock",
            "WatchdogSec=10s",
            "Restart=on-failure",
            "RestartSec=2s",
            "OOMScoreAdjust=-900",
            "TimeoutStopSec=120s",
            "KillMode=mixed",
        ] {
            assert!(s.contains(&line), "[Service] lacks {line:?}:\n{unit}");
        }
        assert!(!s.contains(&"Type=simple"));
        assert_eq!(section(&unit, "[Install]"), ["WantedBy=multi-user.target"]);
    }

    #[test]
    fn fencer_unit_runs_tandemd_fencer_always_and_unkillable() {
        let unit = fencer_unit();
        assert!(has_line(
            &unit,
            "Description=tandem fencer (kills a group's processes when this node's right to run it ends, \
             even if tandemd is dead or frozen)"
        ));
        let s = section(&unit, "[Service]");
        for line in [
            "Type=simple",
            "ExecStartPre=/bin/mkdir -p -m 0700 /run/tandem",
            "ExecStart=/usr/local/bin/tandemd fencer --socket /run/tandem/fencer.sock",
            "Restart=always",
            "RestartSec=0",
            "OOMScoreAdjust=-1000",
            "Nice=-20",
            "CPUSchedulingPolicy=rr",
            "CPUSchedulingPriority=50",
        ] {
            assert!(s.contains(&line), "[Service] lacks {line:?}:\n{unit}");
        }
        assert!(!unit.lines().any(|l| l.starts_with("RuntimeDirectory=")), "{unit}");
        assert_eq!(section(&unit, "[Install]"), ["WantedBy=multi-user.target"]);
        assert!(FENCER_UNIT_PATH.ends_with(&format!("/{FENCER_UNIT}")));
        assert!(FENCER_SOCKET.starts_with(&format!("{RUN_DIR}/")));
    }

    #[test]
    fn bootstrap_enables_the_fencer_before_tandemd() {
        let script = bootstrap(&Source::Ami, None);
        let reload = script.find("systemctl daemon-reload\n").unwrap();
        let fencer = script.find("systemctl enable --now tandem-fencer.service\n").unwrap();
        let tandemd = script.find("systemctl enable --now tandemd.service\n").unwrap();
        assert!(reload < fencer && fencer < tandemd, "{script}");
    }

    /// docs/operations.md shows both units exactly as rendered (for cluster `web`, node `web-a`).
    #[test]
    fn operations_doc_shows_the_rendered_units() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        for (name, text) in [("tandem-fencer.service", fencer_unit()), ("tandemd.service", unit("web", "web-a"))] {
            let block = format!("```ini\n# /etc/systemd/system/{name}\n{text}```\n");
            assert!(doc.contains(&block), "docs/operations.md does not show {name} as rendered:\n{block}");
        }
    }

    #[test]
    fn downloads_are_checked_before_install() {
        let sum = "ab".repeat(32);
        let doc = render(&files(), &Source::parse("https://example.com/tandemd").unwrap(), Some(&sum));
        let script = written(&doc).into_iter().find(|(p, ..)| p.ends_with("bootstrap.sh")).unwrap().2;
        let curl = script.find("curl").unwrap();
        let check = script.find("sha256sum -c").unwrap();
        let install = script.find("mv -f").unwrap();
        assert!(curl < check && check < install, "{script}");
        let s3 = render(&files(), &Source::parse("s3://bucket/bin/tandemd").unwrap(), None);
        let script = written(&s3).into_iter().find(|(p, ..)| p.ends_with("bootstrap.sh")).unwrap().2;
        assert!(script.contains("aws s3 cp --only-show-errors 's3://bucket/bin/tandemd'"));
    }

    #[test]
    fn sources_are_ami_https_or_s3() {
        assert_eq!(Source::parse("ami"), Ok(Source::Ami));
        assert!(Source::parse("http://example.com/t").unwrap_err().contains("https"));
        assert!(Source::parse("https://x/'; rm -rf /").is_err());
        assert!(Source::parse("s3://bucket/").is_err());
        assert!(Source::parse("ftp://x/y").is_err());
        assert!(parse_sha256(&"A".repeat(64)).is_ok());
        assert!(parse_sha256("abc").is_err());
    }
}
