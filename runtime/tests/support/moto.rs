//! moto_server for the runtime's integration tests: the pinned venv of tests/support/moto-venv.sh, a free loopback
//! port read from its log, killed on drop. Included by several test crates, each using part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// moto_server on a free loopback port; killed on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/moto-venv.sh");
        let out = Command::new("bash").arg(&script).stderr(Stdio::inherit()).output().expect("run moto-venv.sh");
        assert!(out.status.success(), "{} failed", script.display());
        let bin = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mut child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn moto_server");
        let stderr = child.stderr.take().expect("moto stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    if let Ok(p) = port.parse::<u16>() {
                        let _ = tx.send(p);
                        sent = true;
                    }
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(port) => Moto { child, port },
            Err(_) => {
                let _ = child.kill();
                panic!("moto_server printed no address within 60 s");
            }
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An SDK configuration for a test endpoint: test credentials, us-east-1, one attempt, a short connect timeout
/// (an unreachable endpoint fails fast) and `operation_timeout` per call.
pub async fn sdk_config(endpoint: &str, operation_timeout: Duration) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "test"))
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(300))
                .operation_timeout(operation_timeout)
                .build(),
        )
        .load()
        .await
}
