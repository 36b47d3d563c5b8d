//! The NBD export server: fixed newstyle handshake, then the transmission phase with pipelined requests.
//!
//! One connection = a reader loop and a writer task. The reader decodes each request (and its WRITE payload) and
//! runs it in its own task, at most [`MAX_IN_FLIGHT`] requests and [`MAX_IN_FLIGHT_BYTES`] payload bytes at once;
//! the writer serialises the replies, in completion order (the protocol allows out-of-order replies).
//!
//! FLUSH: every write-like request (WRITE, TRIM, WRITE_ZEROES) holds a guard of the current *write generation*;
//! a FLUSH closes the generation, waits until every guard of it (and the previous FLUSH) is gone, then calls
//! [`BlockStore::flush`]. So a FLUSH covers every write received before it, completed or not.
//!
//! Malformed requests: where the stream keeps its framing the client gets an error reply (`EINVAL`, `EPERM`,
//! `ENOSPC`) and the connection continues; where it is lost (bad magic, a WRITE payload over [`MAX_PAYLOAD`]) the
//! code is logged, in-flight requests finish, and the connection closes. DISC is graceful the same way.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::proto::{
    self, CMD_READ, ClientOption, Command, INFO_BLOCK_SIZE, INFO_DESCRIPTION, INFO_NAME, Limits, MAX_PAYLOAD, NbdError,
    OPTION_HEADER_LEN, REP_ACK, REP_ERR_INVALID, REP_ERR_UNKNOWN, REP_ERR_UNSUP, REP_INFO, REP_SERVER,
    REQUEST_HEADER_LEN, Request, RequestHeader,
};
use crate::mirror::store::{BlockStore, StoreError};

/// Most requests one connection runs at once; the reader stops reading while this many are in flight.
pub const MAX_IN_FLIGHT: usize = 64;
/// Most READ and WRITE payload bytes one connection holds at once.
pub const MAX_IN_FLIGHT_BYTES: usize = 128 * 1024 * 1024;
/// Longest time a client may take from connecting to entering transmission.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why serving failed. Codes (`TDM-NBD-NNN`) are stable; wire errors keep their own code.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("TDM-NBD-020: binding the NBD export to {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("TDM-NBD-021: NBD connection I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("TDM-NBD-022: NBD over TCP is served on loopback only (no authentication); refusing {0}")]
    NotLoopback(SocketAddr),
    #[error("TDM-NBD-023: NBD client did not finish the handshake within {HANDSHAKE_TIMEOUT:?}")]
    HandshakeTimeout,
    #[error(transparent)]
    Protocol(#[from] NbdError),
}

impl ServerError {
    /// The stable operator-facing code.
    pub fn code(&self) -> &'static str {
        match self {
            ServerError::Bind { .. } => "TDM-NBD-020",
            ServerError::Io(_) => "TDM-NBD-021",
            ServerError::NotLoopback(_) => "TDM-NBD-022",
            ServerError::HandshakeTimeout => "TDM-NBD-023",
            ServerError::Protocol(e) => e.code(),
        }
    }
}

/// One export: a name, a store, and whether clients may write.
pub struct Export {
    name: String,
    description: String,
    store: Arc<dyn BlockStore>,
    read_only: bool,
}

impl Export {
    /// A read-write export of `store` (read-only if the store is).
    pub fn new(name: impl Into<String>, store: Arc<dyn BlockStore>) -> Self {
        Export { name: name.into(), description: String::new(), store, read_only: false }
    }

    /// Serve read-only: writes, trims and zeroes get `EPERM`.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// A human description, sent in `NBD_INFO_DESCRIPTION` when asked.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn store(&self) -> &Arc<dyn BlockStore> {
        &self.store
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only || self.store.read_only()
    }

    /// The transmission flags sent in the handshake.
    pub fn transmission_flags(&self) -> u16 {
        let mut flags = proto::TFLAG_HAS_FLAGS
            | proto::TFLAG_SEND_FLUSH
            | proto::TFLAG_SEND_FUA
            | proto::TFLAG_SEND_TRIM
            | proto::TFLAG_SEND_WRITE_ZEROES;
        if self.is_read_only() {
            flags |= proto::TFLAG_READ_ONLY;
        }
        if self.store.can_multi_conn() {
            flags |= proto::TFLAG_CAN_MULTI_CONN;
        }
        flags
    }

    /// True when a client asking for `name` means this export ("" is the default export).
    fn answers_to(&self, name: &str) -> bool {
        name.is_empty() || name == self.name
    }

    fn limits(&self) -> Limits {
        Limits { size: self.store.size(), read_only: self.is_read_only() }
    }
}

/// Bind a Unix socket for the export, replacing a stale socket file at `path`.
pub fn bind_unix(path: &Path) -> Result<UnixListener, ServerError> {
    use std::os::unix::fs::FileTypeExt;
    let bind_err = |source| ServerError::Bind { addr: path.display().to_string(), source };
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
    {
        std::fs::remove_file(path).map_err(bind_err)?;
    }
    UnixListener::bind(path).map_err(bind_err)
}

/// Bind a TCP listener for the export; only loopback addresses are accepted (port 0 picks a free port).
pub async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    if !addr.ip().is_loopback() {
        return Err(ServerError::NotLoopback(addr));
    }
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr: addr.to_string(), source })
}

/// Serve the export on every connection of `listener`, until the returned future is dropped; dropping it also
/// aborts every open connection (that is how the export stops on demotion).
pub async fn serve_unix(listener: UnixListener, export: Arc<Export>) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, _)) => {
                conns.spawn(run_connection(stream, Arc::clone(&export), "unix".to_string()));
            }
            Err(e) => {
                tracing::warn!(export = %export.name, "NBD export: accept on the Unix socket failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Serve the export on every connection of a TCP `listener` (see [`serve_unix`]).
pub async fn serve_tcp(listener: TcpListener, export: Arc<Export>) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, peer)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!("NBD export: TCP_NODELAY on {peer}: {e}");
                }
                conns.spawn(run_connection(stream, Arc::clone(&export), peer.to_string()));
            }
            Err(e) => {
                tracing::warn!(export = %export.name, "NBD export: accept on TCP failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn run_connection<IO>(io: IO, export: Arc<Export>, peer: String)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tracing::debug!(export = %export.name, %peer, "NBD client connected");
    match serve_connection(io, export.clone()).await {
        Ok(()) => tracing::debug!(export = %export.name, %peer, "NBD client disconnected"),
        Err(e) => tracing::warn!(export = %export.name, %peer, code = e.code(), "NBD connection closed: {e}"),
    }
}

/// Serve one client connection: handshake, then transmission until DISC, end of stream, or a fatal error.
/// A clean end (DISC, `NBD_OPT_ABORT`, the client closing between messages) is `Ok`.
pub async fn serve_connection<IO>(mut io: IO, export: Arc<Export>) -> Result<(), ServerError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut io, &export)).await {
        Err(_) => return Err(ServerError::HandshakeTimeout),
        Ok(Ok(true)) => {}
        // Aborted, or gone before transmission (a probe that connects and closes).
        Ok(Ok(false)) => return Ok(()),
        Ok(Err(ServerError::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
        Ok(Err(e)) => return Err(e),
    }
    let (rd, wr) = tokio::io::split(io);
    let (tx, rx) = mpsc::channel::<Reply>(MAX_IN_FLIGHT * 2);
    let writer = tokio::spawn(write_replies(wr, rx));
    let read_result = read_requests(rd, &export, tx).await;
    let write_result = writer.await.map_err(|e| std::io::Error::other(e.to_string()))?;
    read_result?;
    match write_result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

async fn send_option_reply<W: AsyncWrite + Unpin>(
    io: &mut W,
    opt: u32,
    reply: u32,
    data: &[u8],
) -> std::io::Result<()> {
    io.write_all(&proto::encode_option_reply(opt, reply, data)).await
}

/// The handshake: `true` when the client entered transmission, `false` when it aborted.
async fn handshake<IO>(io: &mut IO, export: &Export) -> Result<bool, ServerError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    io.write_all(&proto::encode_greeting()).await?;
    io.flush().await?;
    let mut cflags = [0u8; 4];
    io.read_exact(&mut cflags).await?;
    let client = proto::decode_client_flags(&cflags)?;
    loop {
        let mut head = [0u8; OPTION_HEADER_LEN];
        io.read_exact(&mut head).await?;
        let head = proto::decode_option_header(&head)?;
        let mut data = vec![0u8; head.len as usize];
        io.read_exact(&mut data).await?;
        let opt = head.opt;
        match proto::decode_option(opt, &data) {
            Err(e) => {
                tracing::debug!(code = e.code(), "NBD handshake: {e}");
                send_option_reply(io, opt, REP_ERR_INVALID, e.to_string().as_bytes()).await?;
            }
            Ok(ClientOption::ExportName(name)) => {
                if !export.answers_to(&name) {
                    return Err(NbdError::UnknownExport { name }.into());
                }
                let reply =
                    proto::encode_export_name_reply(export.store.size(), export.transmission_flags(), client.no_zeroes);
                io.write_all(&reply).await?;
                io.flush().await?;
                return Ok(true);
            }
            Ok(ClientOption::Abort) => {
                // The client may already have closed; an ACK it does not read is fine.
                let _ = send_option_reply(io, opt, REP_ACK, &[]).await;
                let _ = io.flush().await;
                return Ok(false);
            }
            Ok(ClientOption::List) => {
                send_option_reply(io, opt, REP_SERVER, &proto::encode_server_entry(&export.name)).await?;
                send_option_reply(io, opt, REP_ACK, &[]).await?;
            }
            Ok(ClientOption::Info { go, name, requests }) => {
                if !export.answers_to(&name) {
                    let e = NbdError::UnknownExport { name };
                    tracing::debug!(code = e.code(), "NBD handshake: {e}");
                    send_option_reply(io, opt, REP_ERR_UNKNOWN, e.to_string().as_bytes()).await?;
                } else {
                    let info = proto::encode_info_export(export.store.size(), export.transmission_flags());
                    send_option_reply(io, opt, REP_INFO, &info).await?;
                    if requests.contains(&INFO_BLOCK_SIZE) {
                        send_option_reply(io, opt, REP_INFO, &proto::encode_info_block_size()).await?;
                    }
                    if requests.contains(&INFO_NAME) {
                        send_option_reply(io, opt, REP_INFO, &proto::encode_info_text(INFO_NAME, &export.name)).await?;
                    }
                    if requests.contains(&INFO_DESCRIPTION) && !export.description.is_empty() {
                        let text = proto::encode_info_text(INFO_DESCRIPTION, &export.description);
                        send_option_reply(io, opt, REP_INFO, &text).await?;
                    }
                    send_option_reply(io, opt, REP_ACK, &[]).await?;
                    if go {
                        io.flush().await?;
                        return Ok(true);
                    }
                }
            }
            Ok(ClientOption::Unsupported(o)) => {
                let msg = format!("option {o} is not supported by this server (simple replies only, no TLS)");
                send_option_reply(io, opt, REP_ERR_UNSUP, msg.as_bytes()).await?;
            }
        }
        io.flush().await?;
    }
}

/// One reply for the writer task.
struct Reply {
    cookie: u64,
    error: u32,
    data: Option<Vec<u8>>,
}

async fn write_replies<W: AsyncWrite + Unpin>(wr: W, mut rx: mpsc::Receiver<Reply>) -> std::io::Result<()> {
    let mut w = BufWriter::with_capacity(64 * 1024, wr);
    while let Some(r) = rx.recv().await {
        w.write_all(&proto::encode_simple_reply(r.cookie, r.error)).await?;
        if let Some(data) = &r.data {
            w.write_all(data).await?;
        }
        if rx.is_empty() {
            w.flush().await?;
        }
    }
    w.flush().await?;
    w.shutdown().await
}

/// Write generations for FLUSH ordering (see the module doc). A guard is a sender clone; a generation is over
/// when its receiver sees every sender dropped.
struct WriteBarrier {
    tx: mpsc::Sender<()>,
    rx: mpsc::Receiver<()>,
}

impl WriteBarrier {
    fn new() -> Self {
        let (tx, rx) = mpsc::channel(1);
        WriteBarrier { tx, rx }
    }

    /// A guard for a write-like request, held until it completes.
    fn enter(&self) -> mpsc::Sender<()> {
        self.tx.clone()
    }

    /// Close the current generation. Returns what to wait on, and a guard of the new generation that the FLUSH
    /// holds until it is done, so the next FLUSH also waits for this one.
    fn cut(&mut self) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (tx, rx) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, tx));
        let old = std::mem::replace(&mut self.rx, rx);
        (old, self.tx.clone())
    }
}

async fn wait_generation(mut rx: mpsc::Receiver<()>) {
    while rx.recv().await.is_some() {}
}

/// How the reader loop ended.
enum ReadEnd {
    Disc,
    Eof,
}

async fn read_requests<R: AsyncRead + Unpin>(
    mut rd: R,
    export: &Arc<Export>,
    replies: mpsc::Sender<Reply>,
) -> Result<(), ServerError> {
    let requests = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let bytes = Arc::new(Semaphore::new(MAX_IN_FLIGHT_BYTES));
    let mut tasks = JoinSet::new();
    let mut barrier = WriteBarrier::new();
    let limits = export.limits();
    let result = loop {
        while tasks.try_join_next().is_some() {}
        let mut head = [0u8; REQUEST_HEADER_LEN];
        match rd.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(ReadEnd::Eof),
            Err(e) => break Err(ServerError::Io(e)),
        }
        let head = match RequestHeader::decode(&head).and_then(|h| h.payload_len().map(|n| (h, n))) {
            Ok(h) => h,
            Err(e) => break Err(e.into()),
        };
        let (head, payload_len) = head;
        let budget = if head.kind == CMD_READ { head.length.min(MAX_PAYLOAD) } else { payload_len };
        let (Ok(req_permit), Ok(byte_permit)) =
            (Arc::clone(&requests).acquire_owned().await, Arc::clone(&bytes).acquire_many_owned(budget).await)
        else {
            break Err(std::io::Error::other("request semaphore closed").into());
        };
        let mut payload = vec![0u8; payload_len as usize];
        if let Err(e) = rd.read_exact(&mut payload).await {
            break Err(ServerError::Io(e));
        }
        let req = match proto::validate_request(&head, limits) {
            Ok(r) => r,
            Err(e) if e.is_fatal() => break Err(e.into()),
            Err(e) => {
                tracing::debug!(export = %export.name, code = e.code(), "NBD request refused: {e}");
                if replies.send(Reply { cookie: head.cookie, error: e.errno(), data: None }).await.is_err() {
                    break Ok(ReadEnd::Eof);
                }
                continue;
            }
        };
        let guards = match req.cmd {
            Command::Disc => break Ok(ReadEnd::Disc),
            Command::Flush => {
                let (wait, next) = barrier.cut();
                (Some(wait), Some(next))
            }
            c if c.is_write() => (None, Some(barrier.enter())),
            _ => (None, None),
        };
        let store = Arc::clone(&export.store);
        let replies = replies.clone();
        tasks.spawn(async move {
            let (wait, guard) = guards;
            if let Some(wait) = wait {
                wait_generation(wait).await;
            }
            let (error, data) = match execute(store.as_ref(), &req, payload).await {
                Ok(data) => (proto::NBD_OK, data),
                Err(e) => {
                    tracing::warn!(code = e.code(), "NBD {} failed: {e}", req.cmd.name());
                    (e.nbd_errno(), None)
                }
            };
            let _ = replies.send(Reply { cookie: req.cookie, error, data }).await;
            // Released after the reply is queued, so a FLUSH's reply always follows those of the writes it covers.
            drop((guard, req_permit, byte_permit));
        });
    };
    drop(barrier);
    while tasks.join_next().await.is_some() {}
    drop(replies);
    match result {
        Ok(ReadEnd::Disc) | Ok(ReadEnd::Eof) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn execute(store: &dyn BlockStore, req: &Request, payload: Vec<u8>) -> Result<Option<Vec<u8>>, StoreError> {
    let len = u64::from(req.length);
    match req.cmd {
        Command::Read if req.length == 0 => Ok(Some(Vec::new())),
        Command::Read => store.read_at(req.offset, req.length).await.map(Some),
        Command::Write if req.length == 0 => Ok(None),
        Command::Write => store.write_at(req.offset, Arc::new(payload), req.fua).await.map(|()| None),
        Command::Flush => store.flush().await.map(|()| None),
        Command::Trim => store.trim(req.offset, len).await.map(|()| None),
        Command::WriteZeroes => store.write_zeroes(req.offset, len, req.fua).await.map(|()| None),
        Command::Disc => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::store::{FileStore, WriteBuf};

    #[tokio::test]
    async fn flush_waits_for_writes_received_before_it() {
        let mut b = WriteBarrier::new();
        let w1 = b.enter();
        let (wait1, f1) = b.cut();
        let w2 = b.enter();
        let (wait2, f2) = b.cut();
        let mut first = tokio::spawn(wait_generation(wait1));
        let mut second = tokio::spawn(wait_generation(wait2));
        drop(w2);
        tokio::task::yield_now().await;
        assert!(futures_poll_pending(&mut second).await, "second flush must also wait for the first flush");
        drop(f2);
        assert!(futures_poll_pending(&mut first).await, "first flush must wait for w1");
        drop(w1);
        first.await.expect("first");
        assert!(futures_poll_pending(&mut second).await, "second flush waits for the first flush's guard");
        drop(f1);
        second.await.expect("second");
    }

    async fn futures_poll_pending(h: &mut tokio::task::JoinHandle<()>) -> bool {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        !h.is_finished()
    }

    #[test]
    fn flags_follow_the_store_and_read_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d");
        std::fs::write(&path, [0u8; 512]).expect("write");
        let store: Arc<dyn BlockStore> = Arc::new(FileStore::open(&path).expect("open"));
        let rw = Export::new("d", Arc::clone(&store));
        assert_eq!(rw.transmission_flags(), 0b1_0110_1101);
        let ro = Export::new("d", store).read_only(true);
        assert_eq!(ro.transmission_flags() & proto::TFLAG_READ_ONLY, proto::TFLAG_READ_ONLY);
        assert!(rw.answers_to("") && rw.answers_to("d") && !rw.answers_to("e"));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_client_is_dropped_after_the_handshake_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d");
        std::fs::write(&path, [0u8; 512]).expect("write");
        let export = Arc::new(Export::new("d", Arc::new(FileStore::open(&path).expect("open"))));
        let (server_side, _client_side) = tokio::io::duplex(4096);
        let e = serve_connection(server_side, export).await.expect_err("timeout");
        assert_eq!(e.code(), "TDM-NBD-023");
    }

    /// A store whose every operation but the read of offset 0 fails with the error of its kind.
    struct FailingStore;

    #[async_trait::async_trait]
    impl BlockStore for FailingStore {
        fn size(&self) -> u64 {
            1 << 20
        }
        async fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, StoreError> {
            if offset == 0 {
                return Ok(vec![0x5a; len as usize]);
            }
            Err(StoreError::from_io("read", offset, std::io::Error::from_raw_os_error(5)))
        }
        async fn write_at(&self, offset: u64, _data: WriteBuf, _fua: bool) -> Result<(), StoreError> {
            Err(StoreError::from_io("write", offset, std::io::Error::from_raw_os_error(28)))
        }
        async fn flush(&self) -> Result<(), StoreError> {
            Err(StoreError::Sync { source: std::io::Error::from_raw_os_error(5) })
        }
        async fn trim(&self, offset: u64, _len: u64) -> Result<(), StoreError> {
            Err(StoreError::from_io("trim", offset, std::io::Error::from_raw_os_error(30)))
        }
        async fn write_zeroes(&self, offset: u64, _len: u64, _fua: bool) -> Result<(), StoreError> {
            Err(StoreError::from_io("write_zeroes", offset, std::io::Error::from_raw_os_error(122)))
        }
    }

    /// Send one request of 512 bytes (none for FLUSH) and read its reply; returns the reply's error value.
    async fn request(c: &mut tokio::io::DuplexStream, kind: u16, cookie: u64, offset: u64) -> u32 {
        let length = if kind == proto::CMD_FLUSH { 0 } else { 512 };
        let h = RequestHeader { flags: 0, kind, cookie, offset, length };
        c.write_all(&h.encode()).await.expect("request");
        if kind == proto::CMD_WRITE {
            c.write_all(&[1u8; 512]).await.expect("payload");
        }
        let mut r = [0u8; proto::SIMPLE_REPLY_LEN];
        c.read_exact(&mut r).await.expect("reply");
        assert_eq!(u64::from_be_bytes(r[8..16].try_into().expect("8 bytes")), cookie);
        let error = u32::from_be_bytes(r[4..8].try_into().expect("4 bytes"));
        if kind == proto::CMD_READ && error == proto::NBD_OK {
            let mut data = vec![0u8; 512];
            c.read_exact(&mut data).await.expect("read data");
            assert_eq!(data, vec![0x5a; 512]);
        }
        error
    }

    #[tokio::test]
    async fn store_errors_reach_the_client_as_their_nbd_errno_and_the_connection_continues() {
        let export = Arc::new(Export::new("d", Arc::new(FailingStore)));
        let (server_side, mut c) = tokio::io::duplex(1 << 16);
        let served = tokio::spawn(serve_connection(server_side, export));
        let mut greeting = [0u8; proto::GREETING_LEN];
        c.read_exact(&mut greeting).await.expect("greeting");
        c.write_all(&(proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES).to_be_bytes()).await.expect("flags");
        let mut opt = proto::IHAVEOPT.to_be_bytes().to_vec();
        opt.extend_from_slice(&proto::OPT_EXPORT_NAME.to_be_bytes());
        opt.extend_from_slice(&1u32.to_be_bytes());
        opt.push(b'd');
        c.write_all(&opt).await.expect("export name");
        let mut reply = [0u8; 10];
        c.read_exact(&mut reply).await.expect("size and flags");

        let cases = [
            (proto::CMD_WRITE, 4096, proto::NBD_ENOSPC),
            (proto::CMD_WRITE_ZEROES, 4096, proto::NBD_ENOSPC),
            (proto::CMD_READ, 4096, proto::NBD_EIO),
            (proto::CMD_FLUSH, 0, proto::NBD_EIO),
            (proto::CMD_TRIM, 4096, proto::NBD_EPERM),
            (proto::CMD_READ, 0, proto::NBD_OK),
        ];
        for (i, (kind, offset, expected)) in cases.into_iter().enumerate() {
            let got = request(&mut c, kind, i as u64, offset).await;
            assert_eq!(got, expected, "command {kind} at {offset}");
        }
        let h = RequestHeader { flags: 0, kind: proto::CMD_DISC, cookie: 99, offset: 0, length: 0 };
        c.write_all(&h.encode()).await.expect("disc");
        served.await.expect("join").expect("a store failure is not a connection failure");
    }

    #[tokio::test]
    async fn tcp_refuses_non_loopback_addresses() {
        let e = bind_tcp("0.0.0.0:0".parse().expect("addr")).await.expect_err("not loopback");
        assert_eq!(e.code(), "TDM-NBD-022");
    }
}
