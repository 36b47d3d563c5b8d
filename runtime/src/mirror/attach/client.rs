//! The client side of the NBD handshake (fixed newstyle, `NBD_OPT_GO`), so the connected socket can be handed to
//! the kernel, which then speaks the transmission phase on it.
//!
//! Sequence: read the greeting (`NBDMAGIC`, `IHAVEOPT`, handshake flags; fixed newstyle required), send the client
//! flags (fixed newstyle, plus no-zeroes when the server offers it), send `NBD_OPT_GO` for the export asking for
//! `NBD_INFO_BLOCK_SIZE`, read replies until `NBD_REP_ACK`. A server answering `NBD_REP_ERR_UNSUP` to GO gets
//! `NBD_OPT_EXPORT_NAME` instead (old servers). No structured replies are negotiated: the kernel speaks simple
//! replies only.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::AttachError;
use crate::mirror::nbd::proto::{
    FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, GREETING_LEN, IHAVEOPT,
    INFO_BLOCK_SIZE, INFO_EXPORT, MAX_NAME, NBD_MAGIC, OPT_EXPORT_NAME, OPT_GO, OPTION_REPLY_MAGIC, REP_ACK,
    REP_ERR_UNSUP, REP_INFO,
};

/// Longest time the whole handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest option reply we read; ours are a few dozen bytes.
const MAX_REPLY_DATA: u32 = 64 * 1024;

/// What the server told about the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportInfo {
    pub size: u64,
    /// Transmission flags (`NBD_FLAG_*`), handed to the kernel as they are.
    pub flags: u16,
    /// `NBD_INFO_BLOCK_SIZE` (minimum, preferred, maximum payload), when the server sent it.
    pub block_size: Option<(u32, u32, u32)>,
}

fn protocol(reason: impl Into<String>) -> AttachError {
    AttachError::HandshakeProtocol { reason: reason.into() }
}

/// Decode the server greeting; returns whether the server offers `NBD_FLAG_NO_ZEROES`.
pub fn decode_greeting(g: &[u8; GREETING_LEN]) -> Result<bool, AttachError> {
    let magic = u64::from_be_bytes([g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]]);
    if magic != NBD_MAGIC {
        return Err(protocol(format!("greeting has magic {magic:#018x}, not NBDMAGIC")));
    }
    let opt = u64::from_be_bytes([g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]]);
    if opt != IHAVEOPT {
        return Err(protocol("oldstyle server (no IHAVEOPT): newstyle negotiation is required"));
    }
    let flags = u16::from_be_bytes([g[16], g[17]]);
    if flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(protocol("server does not offer fixed newstyle negotiation"));
    }
    Ok(flags & FLAG_NO_ZEROES != 0)
}

/// An option request: `IHAVEOPT`, option, data length, data.
pub fn encode_option(opt: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + data.len());
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&opt.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// `NBD_OPT_GO` data: name length, name, one information request (`NBD_INFO_BLOCK_SIZE`).
pub fn encode_go_data(name: &str) -> Vec<u8> {
    let mut d = Vec::with_capacity(8 + name.len());
    d.extend_from_slice(&(name.len() as u32).to_be_bytes());
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&1u16.to_be_bytes());
    d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    d
}

/// An option reply header: which option it answers, the reply type, the data length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyHeader {
    pub opt: u32,
    pub reply: u32,
    pub len: u32,
}

pub fn decode_reply_header(b: &[u8; 20]) -> Result<ReplyHeader, AttachError> {
    let magic = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    if magic != OPTION_REPLY_MAGIC {
        return Err(protocol(format!("option reply has magic {magic:#018x}")));
    }
    let h = ReplyHeader {
        opt: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        reply: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
        len: u32::from_be_bytes([b[16], b[17], b[18], b[19]]),
    };
    if h.len > MAX_REPLY_DATA {
        return Err(protocol(format!("option reply of {} bytes", h.len)));
    }
    Ok(h)
}

/// Apply one `NBD_REP_INFO` payload to what we know.
fn apply_info(
    data: &[u8],
    size_flags: &mut Option<(u64, u16)>,
    block: &mut Option<(u32, u32, u32)>,
) -> Result<(), AttachError> {
    if data.len() < 2 {
        return Err(protocol("NBD_REP_INFO shorter than its type"));
    }
    let be32 = |at: usize| u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
    match u16::from_be_bytes([data[0], data[1]]) {
        INFO_EXPORT => {
            if data.len() != 12 {
                return Err(protocol("NBD_INFO_EXPORT is not 12 bytes"));
            }
            let mut s = [0u8; 8];
            s.copy_from_slice(&data[2..10]);
            *size_flags = Some((u64::from_be_bytes(s), u16::from_be_bytes([data[10], data[11]])));
        }
        INFO_BLOCK_SIZE => {
            if data.len() != 14 {
                return Err(protocol("NBD_INFO_BLOCK_SIZE is not 14 bytes"));
            }
            *block = Some((be32(2), be32(6), be32(10)));
        }
        _ => {} // NAME, DESCRIPTION, anything newer: not needed
    }
    Ok(())
}

async fn read_exact<IO: AsyncRead + Unpin>(io: &mut IO, buf: &mut [u8]) -> Result<(), AttachError> {
    io.read_exact(buf).await.map(|_| ()).map_err(AttachError::HandshakeIo)
}

/// Run the handshake for export `name` ("" is the default export) on a connected stream. Afterwards the stream
/// is in the transmission phase.
pub async fn handshake<IO: AsyncRead + AsyncWrite + Unpin>(io: &mut IO, name: &str) -> Result<ExportInfo, AttachError> {
    if name.len() > MAX_NAME {
        return Err(protocol("export name longer than 4096 bytes"));
    }
    let mut greeting = [0u8; GREETING_LEN];
    read_exact(io, &mut greeting).await?;
    let no_zeroes = decode_greeting(&greeting)?;
    let client_flags = FLAG_C_FIXED_NEWSTYLE | if no_zeroes { FLAG_C_NO_ZEROES } else { 0 };
    let mut out = client_flags.to_be_bytes().to_vec();
    out.extend(encode_option(OPT_GO, &encode_go_data(name)));
    io.write_all(&out).await.map_err(AttachError::HandshakeIo)?;
    io.flush().await.map_err(AttachError::HandshakeIo)?;

    let mut size_flags = None;
    let mut block = None;
    loop {
        let mut hb = [0u8; 20];
        read_exact(io, &mut hb).await?;
        let h = decode_reply_header(&hb)?;
        let mut data = vec![0u8; h.len as usize];
        read_exact(io, &mut data).await?;
        if h.opt != OPT_GO {
            return Err(protocol(format!("reply to option {} while waiting for NBD_OPT_GO", h.opt)));
        }
        match h.reply {
            REP_INFO => apply_info(&data, &mut size_flags, &mut block)?,
            REP_ACK => {
                let (size, flags) = size_flags.ok_or_else(|| protocol("NBD_REP_ACK before NBD_INFO_EXPORT"))?;
                return Ok(ExportInfo { size, flags, block_size: block });
            }
            REP_ERR_UNSUP => return export_name_fallback(io, name, no_zeroes).await,
            r if r & (1 << 31) != 0 => {
                return Err(AttachError::ExportRefused {
                    name: name.to_string(),
                    reply: r,
                    message: String::from_utf8_lossy(&data).into_owned(),
                });
            }
            _ => {} // unknown non-error replies are skipped, as the protocol says
        }
    }
}

/// `NBD_OPT_EXPORT_NAME`, for servers without `NBD_OPT_GO`: size, flags, then 124 zeroes unless no-zeroes.
async fn export_name_fallback<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    name: &str,
    no_zeroes: bool,
) -> Result<ExportInfo, AttachError> {
    io.write_all(&encode_option(OPT_EXPORT_NAME, name.as_bytes())).await.map_err(AttachError::HandshakeIo)?;
    io.flush().await.map_err(AttachError::HandshakeIo)?;
    let mut b = [0u8; 10];
    read_exact(io, &mut b).await?;
    if !no_zeroes {
        read_exact(io, &mut [0u8; 124]).await?;
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(&b[0..8]);
    Ok(ExportInfo { size: u64::from_be_bytes(s), flags: u16::from_be_bytes([b[8], b[9]]), block_size: None })
}

/// Connect to an export's Unix socket and run the handshake. Returns a blocking std socket (what the kernel
/// takes) in the transmission phase, and the export's size and flags.
pub async fn connect_export(
    sock: &Path,
    name: &str,
) -> Result<(std::os::unix::net::UnixStream, ExportInfo), AttachError> {
    let work = async {
        let mut stream = tokio::net::UnixStream::connect(sock)
            .await
            .map_err(|source| AttachError::ExportConnect { path: sock.display().to_string(), source })?;
        let info = handshake(&mut stream, name).await?;
        let std = stream.into_std().map_err(AttachError::HandshakeIo)?;
        std.set_nonblocking(false).map_err(AttachError::HandshakeIo)?;
        Ok((std, info))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, work).await.map_err(|_| AttachError::HandshakeTimeout)?
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::mirror::nbd::proto::{self, REP_ERR_UNKNOWN, TFLAG_HAS_FLAGS, TFLAG_READ_ONLY};
    use crate::mirror::nbd::{Export, serve_connection};
    use crate::mirror::store::FileStore;

    fn export(size: usize, read_only: bool) -> (tempfile::TempDir, Arc<Export>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk.img");
        std::fs::write(&path, vec![7u8; size]).expect("backing");
        let store = Arc::new(FileStore::open(&path).expect("store"));
        (dir, Arc::new(Export::new("data", store).read_only(read_only)))
    }

    #[tokio::test]
    async fn go_against_our_server_reads_size_flags_and_block_sizes() {
        let (_dir, exp) = export(64 * 1024, true);
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(serve_connection(server, exp));
        let info = handshake(&mut client, "data").await.expect("handshake");
        assert_eq!(info.size, 64 * 1024);
        assert_ne!(info.flags & TFLAG_HAS_FLAGS, 0);
        assert_ne!(info.flags & TFLAG_READ_ONLY, 0);
        assert_eq!(info.block_size, Some((proto::MIN_BLOCK, proto::PREFERRED_BLOCK, proto::MAX_PAYLOAD)));
        drop(client);
        let _ = task.await;
    }

    #[tokio::test]
    async fn default_name_means_our_export() {
        let (_dir, exp) = export(4096, false);
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let _task = tokio::spawn(serve_connection(server, exp));
        let info = handshake(&mut client, "").await.expect("handshake");
        assert_eq!(info.size, 4096);
        assert_eq!(info.flags & TFLAG_READ_ONLY, 0);
    }

    #[tokio::test]
    async fn unknown_export_is_refused_with_the_servers_reply() {
        let (_dir, exp) = export(4096, false);
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let _task = tokio::spawn(serve_connection(server, exp));
        let e = handshake(&mut client, "other").await.expect_err("unknown export");
        assert_eq!(e.code(), "TDM-ATT-009");
        assert!(matches!(e, AttachError::ExportRefused { reply: REP_ERR_UNKNOWN, .. }), "{e}");
    }

    #[tokio::test]
    async fn a_server_without_go_gets_export_name() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let fake = tokio::spawn(async move {
            let mut g = proto::encode_greeting().to_vec();
            g[17] = FLAG_FIXED_NEWSTYLE as u8; // no NO_ZEROES: the reply carries 124 zeroes
            server.write_all(&g).await.expect("greeting");
            let mut flags = [0u8; 4];
            server.read_exact(&mut flags).await.expect("flags");
            assert_eq!(u32::from_be_bytes(flags), FLAG_C_FIXED_NEWSTYLE);
            let mut h = [0u8; 16];
            server.read_exact(&mut h).await.expect("go header");
            let len = u32::from_be_bytes([h[12], h[13], h[14], h[15]]) as usize;
            server.read_exact(&mut vec![0u8; len]).await.expect("go data");
            server.write_all(&proto::encode_option_reply(OPT_GO, REP_ERR_UNSUP, b"")).await.expect("unsup");
            server.read_exact(&mut h).await.expect("export name header");
            assert_eq!(u32::from_be_bytes([h[8], h[9], h[10], h[11]]), OPT_EXPORT_NAME);
            let len = u32::from_be_bytes([h[12], h[13], h[14], h[15]]) as usize;
            let mut name = vec![0u8; len];
            server.read_exact(&mut name).await.expect("name");
            assert_eq!(name, b"data");
            server.write_all(&proto::encode_export_name_reply(8192, 0x0d, false)).await.expect("reply");
            server
        });
        let info = handshake(&mut client, "data").await.expect("fallback");
        assert_eq!(info, ExportInfo { size: 8192, flags: 0x0d, block_size: None });
        let _ = fake.await;
    }

    #[test]
    fn greeting_without_fixed_newstyle_or_with_bad_magic_is_refused() {
        let mut g = proto::encode_greeting();
        assert!(decode_greeting(&g).expect("ours"));
        g[17] = 0;
        assert_eq!(decode_greeting(&g).map_err(|e| e.code()), Err("TDM-ATT-008"));
        let mut g = proto::encode_greeting();
        g[0] = b'X';
        assert!(decode_greeting(&g).is_err());
        let mut g = proto::encode_greeting();
        g[8..16].copy_from_slice(&0x0000_4202_8186_1253u64.to_be_bytes()); // oldstyle cliserv magic
        assert!(decode_greeting(&g).is_err());
    }

    #[test]
    fn go_request_is_encoded_as_the_protocol_says() {
        let b = encode_option(OPT_GO, &encode_go_data("data"));
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &b"IHAVEOPT"[..],
            &[0, 0, 0, 7],          // NBD_OPT_GO
            &[0, 0, 0, 12],         // 4 + 4 + 2 + 2
            &[0, 0, 0, 4], b"data",
            &[0, 1], &[0, 3],       // one request: NBD_INFO_BLOCK_SIZE
        ]
        .concat();
        assert_eq!(b, expected);
    }

    #[test]
    fn oversized_or_bad_replies_are_protocol_errors() {
        let mut r = [0u8; 20];
        r.copy_from_slice(&proto::encode_option_reply(OPT_GO, REP_ACK, b"")[..20]);
        assert_eq!(decode_reply_header(&r).expect("ok"), ReplyHeader { opt: OPT_GO, reply: REP_ACK, len: 0 });
        r[16..20].copy_from_slice(&(MAX_REPLY_DATA + 1).to_be_bytes());
        assert!(decode_reply_header(&r).is_err());
        r[0] = 0;
        assert!(decode_reply_header(&r).is_err());
        let (mut sf, mut bs) = (None, None);
        assert!(apply_info(&[0, 0, 1], &mut sf, &mut bs).is_err(), "short INFO_EXPORT");
        assert!(apply_info(&[0], &mut sf, &mut bs).is_err());
        apply_info(&[0, 1, b'x'], &mut sf, &mut bs).expect("NAME is skipped");
        assert_eq!((sf, bs), (None, None));
    }
}
