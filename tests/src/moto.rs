//! moto's server on a free loopback port, one per test so that tests never see each other's objects.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{HarnessError, workspace_root};

pub struct Moto {
    child: Child,
    pub port: u16,
    host: IpAddr,
}

/// Path of the pinned moto_server, installing it into the venv on first use.
pub fn moto_server_binary() -> Result<String, HarnessError> {
    let script = workspace_root().join("tests/support/moto-venv.sh");
    let out = Command::new("bash").arg(&script).stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        return Err(HarnessError::Start {
            what: "moto venv".into(),
            detail: format!("{} failed; is python3 with venv and pip installed?", script.display()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Moto {
    /// Starts moto on 127.0.0.1 with an OS-chosen port; `extra_env` e.g. enables IAM authentication.
    pub fn start_with(extra_env: &[(&str, &str)]) -> Result<Moto, HarnessError> {
        Self::start_on_with(IpAddr::V4(Ipv4Addr::LOCALHOST), extra_env)
    }

    /// Starts moto on `host` (e.g. a test bed's `host_addr()`, so that nodes in network namespaces reach it)
    /// with an OS-chosen port.
    pub fn start_on(host: IpAddr) -> Result<Moto, HarnessError> {
        Self::start_on_with(host, &[])
    }

    /// [`Moto::start_on`] with extra environment, like [`Moto::start_with`].
    pub fn start_on_with(host: IpAddr, extra_env: &[(&str, &str)]) -> Result<Moto, HarnessError> {
        let bin = moto_server_binary()?;
        let mut cmd = Command::new(bin);
        let host_arg = host.to_string();
        cmd.args(["-H", host_arg.as_str(), "-p", "0"]).stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| HarnessError::Start { what: "moto".into(), detail: "no stderr".into() })?;
        let (tx, rx) = mpsc::channel();
        let marker = format!("http://{}:", url_host(host));
        // Werkzeug prints "Running on http://HOST:PORT"; keep draining stderr afterwards so moto never blocks.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(rest) = line.split(marker.as_str()).nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    if let Ok(p) = port.parse::<u16>() {
                        let _ = tx.send(p);
                        sent = true;
                    }
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(port) => Ok(Moto { child, port, host }),
            Err(_) => {
                let _ = child.kill();
                Err(HarnessError::Start {
                    what: "moto_server".into(),
                    detail: "it printed no address within 60 s".into(),
                })
            }
        }
    }

    pub fn start() -> Result<Moto, HarnessError> {
        Self::start_with(&[])
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", url_host(self.host), self.port)
    }
}

/// The host part of a URL: IPv6 addresses in brackets.
fn url_host(host: IpAddr) -> String {
    match host {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
