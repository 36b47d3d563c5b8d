//! tandemd's side of the fencer socket: one connection, re-opened after any error (the fencer may restart: its
//! unit has `Restart=always`, and a fresh fencer knows nothing until the next ARM, which comes within one step).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::Mutex;

use super::clock::to_boottime;
use super::protocol::{GroupState, MAX_LINE, Reply, Request};

/// Bound on one request (connect, write, read every reply line).
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);

/// Why the fencer could not be asked; `code()` is stable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FenceClientError {
    #[error("fencer at {path}: {detail}; is tandem-fencer running (systemctl status tandem-fencer)?")]
    Unreachable { path: PathBuf, detail: String },
    #[error("fencer at {path} refused {request}: [{code}] {message}")]
    Refused { path: PathBuf, request: String, code: &'static str, message: String },
}

impl FenceClientError {
    pub fn code(&self) -> &'static str {
        match self {
            FenceClientError::Unreachable { .. } => "TDM-FNC-004",
            FenceClientError::Refused { .. } => "TDM-FNC-005",
        }
    }
}

pub struct FenceClient {
    path: PathBuf,
    conn: Mutex<Option<BufReader<UnixStream>>>,
}

impl FenceClient {
    pub fn new(path: impl Into<PathBuf>) -> FenceClient {
        FenceClient { path: path.into(), conn: Mutex::new(None) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn unreachable(&self, detail: impl std::fmt::Display) -> FenceClientError {
        FenceClientError::Unreachable { path: self.path.clone(), detail: detail.to_string() }
    }

    /// Sends one request and reads its replies (up to END for STATE), reconnecting once if the connection broke.
    pub async fn request(&self, req: &Request) -> Result<Vec<Reply>, FenceClientError> {
        let mut conn = self.conn.lock().await;
        let mut last = None;
        for _ in 0..2 {
            if conn.is_none() {
                match tokio::time::timeout(REQUEST_TIMEOUT, UnixStream::connect(&self.path)).await {
                    Ok(Ok(s)) => *conn = Some(BufReader::new(s)),
                    Ok(Err(e)) => return Err(self.unreachable(e)),
                    Err(_) => return Err(self.unreachable("connect timed out")),
                }
            }
            let Some(stream) = conn.as_mut() else { continue };
            match tokio::time::timeout(REQUEST_TIMEOUT, exchange(stream, req)).await {
                Ok(Ok(replies)) => {
                    if let Some(Reply::Err { code, message }) = replies.first() {
                        return Err(FenceClientError::Refused {
                            path: self.path.clone(),
                            request: req.to_string(),
                            code,
                            message: message.clone(),
                        });
                    }
                    return Ok(replies);
                }
                Ok(Err(e)) => last = Some(self.unreachable(e)),
                Err(_) => last = Some(self.unreachable("no answer in time")),
            }
            *conn = None;
        }
        Err(last.unwrap_or_else(|| self.unreachable("no connection")))
    }

    /// Arms (or re-arms) `group`: kill `cgroups` at `deadline` unless re-armed or disarmed first.
    pub async fn arm(
        &self,
        group: &str,
        token: u64,
        deadline: Instant,
        cgroups: &[String],
    ) -> Result<(), FenceClientError> {
        let req =
            Request::Arm { group: group.into(), token, deadline_ns: to_boottime(deadline), cgroups: cgroups.to_vec() };
        self.request(&req).await.map(|_| ())
    }

    pub async fn disarm(&self, group: &str) -> Result<(), FenceClientError> {
        self.request(&Request::Disarm { group: group.into() }).await.map(|_| ())
    }

    /// What the fencer holds for `group`, if anything.
    pub async fn state_of(&self, group: &str) -> Result<Option<GroupState>, FenceClientError> {
        let replies = self.request(&Request::State).await?;
        Ok(replies.into_iter().find_map(|r| match r {
            Reply::Group(g) if g.group == group => Some(g),
            _ => None,
        }))
    }
}

async fn exchange(stream: &mut BufReader<UnixStream>, req: &Request) -> std::io::Result<Vec<Reply>> {
    let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    stream.get_mut().write_all(format!("{req}\n").as_bytes()).await?;
    let mut replies = Vec::new();
    loop {
        let mut line = String::new();
        let n = (&mut *stream).take(MAX_LINE as u64 + 1).read_line(&mut line).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the fencer closed the connection"));
        }
        let reply = Reply::decode(line.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let last = !matches!(req, Request::State) || matches!(reply, Reply::End | Reply::Err { .. });
        replies.push(reply);
        if last {
            return Ok(replies);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fence::server;

    fn fencer(dir: &Path) -> PathBuf {
        let path = dir.join("fencer.sock");
        let listener = server::bind(&path).expect("bind");
        std::thread::spawn(move || server::serve(listener, Duration::from_millis(100)));
        path
    }

    #[tokio::test]
    async fn arm_state_disarm_through_a_real_fencer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = FenceClient::new(fencer(dir.path()));
        let deadline = Instant::now() + Duration::from_secs(60);
        client.arm("g", 5, deadline, &["/nonexistent/cg".into()]).await.expect("arm");
        let s = client.state_of("g").await.expect("state").expect("armed");
        assert_eq!((s.token, s.fired), (5, None));
        assert!(crate::fence::clock::from_boottime(s.deadline_ns) <= deadline);
        client.disarm("g").await.expect("disarm");
        assert_eq!(client.state_of("g").await.expect("state"), None);
    }

    #[tokio::test]
    async fn a_passed_deadline_fires_without_tandemd() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = fencer(dir.path());
        {
            let client = FenceClient::new(&path);
            client.arm("g", 2, Instant::now() + Duration::from_millis(30), &[]).await.expect("arm");
            // The client goes away, as a killed tandemd would.
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
        let s = FenceClient::new(&path).state_of("g").await.expect("state").expect("known");
        let fired = s.fired.expect("fired once the deadline passed");
        assert!(fired.ok && fired.at_ns >= s.deadline_ns);
    }

    #[tokio::test]
    async fn an_unreachable_fencer_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = FenceClient::new(dir.path().join("none.sock")).disarm("g").await.expect_err("no fencer");
        assert_eq!(e.code(), "TDM-FNC-004");
    }

    #[tokio::test]
    async fn a_second_fencer_on_the_same_socket_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = fencer(dir.path());
        let e = server::bind(&path).expect_err("a fencer answers there");
        assert_eq!(e.code(), "TDM-FNC-001");
    }
}
