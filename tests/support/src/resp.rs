//! A tiny RESP2 client, so tests can inspect and poke Redis without `redis-cli`
//! and without going through the service's own Redis client code.
//!
//! Every call opens a fresh connection, sends one command and reads one reply.
//! That keeps the helper stateless (no pipelining, no pub/sub, no RESP3).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One decoded RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespValue {
    /// `+OK`
    Simple(String),
    /// `-ERR ...` (the text without the leading `-`).
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`
    Bulk(Vec<u8>),
    /// `$-1` or `*-1`
    Nil,
    /// `*N` followed by N replies.
    Array(Vec<RespValue>),
}

impl RespValue {
    /// The text of a simple or (UTF-8) bulk string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            RespValue::Simple(s) => Some(s),
            RespValue::Bulk(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The value of an integer reply (or of a bulk string holding an integer).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            RespValue::Integer(n) => Some(*n),
            other => other.as_str()?.parse().ok(),
        }
    }

    /// The elements of an array reply.
    pub fn as_array(&self) -> Option<&[RespValue]> {
        match self {
            RespValue::Array(items) => Some(items),
            _ => None,
        }
    }

    /// True for `$-1` / `*-1`.
    pub fn is_nil(&self) -> bool {
        matches!(self, RespValue::Nil)
    }

    /// True for an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, RespValue::Error(_))
    }
}

/// Renders like `redis-cli` without quotes: strings and integers as-is, errors as
/// `(error) MSG`, nil as `(nil)`, arrays flattened one element per line, and an
/// empty array as `(empty array)`.
impl fmt::Display for RespValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespValue::Simple(s) => f.write_str(s),
            RespValue::Error(e) => write!(f, "(error) {e}"),
            RespValue::Integer(n) => write!(f, "{n}"),
            RespValue::Bulk(b) => f.write_str(&String::from_utf8_lossy(b)),
            RespValue::Nil => f.write_str("(nil)"),
            RespValue::Array(items) if items.is_empty() => f.write_str("(empty array)"),
            RespValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "{item}")?;
                }
                Ok(())
            }
        }
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses one reply from the start of `buf`: `Ok(None)` if more bytes are
/// needed, otherwise the value and the number of bytes it used.
pub fn parse(buf: &[u8]) -> io::Result<Option<(RespValue, usize)>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("bad RESP reply: {what}"));
    let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[1..line_end]).map_err(|_| bad("non-UTF-8 header"))?;
    let next = line_end + 2;
    let number = || line.parse::<i64>().map_err(|_| bad(line));
    let value = match buf[0] {
        b'+' => (RespValue::Simple(line.to_owned()), next),
        b'-' => (RespValue::Error(line.to_owned()), next),
        b':' => (RespValue::Integer(number()?), next),
        b'$' if number()? < 0 => (RespValue::Nil, next),
        b'$' => {
            let len = number()? as usize;
            if buf.len() < next + len + 2 {
                return Ok(None);
            }
            (RespValue::Bulk(buf[next..next + len].to_vec()), next + len + 2)
        }
        b'*' if number()? < 0 => (RespValue::Nil, next),
        b'*' => {
            let mut items = Vec::new();
            let mut pos = next;
            for _ in 0..number()? {
                let Some((item, used)) = parse(&buf[pos..])? else {
                    return Ok(None);
                };
                items.push(item);
                pos += used;
            }
            (RespValue::Array(items), pos)
        }
        other => return Err(bad(&format!("unexpected type byte {:?}", other as char))),
    };
    Ok(Some(value))
}

/// Sends one command to the Redis at `addr` over a fresh blocking connection and
/// returns its reply (error replies are `Ok(RespValue::Error)`); `timeout` bounds
/// connect, write and each read. Do not point this at a [`super::ChaosProxy`]
/// from a current-thread runtime: the proxy would never get to run.
pub fn resp_command(addr: SocketAddr, args: &[&str], timeout: Duration) -> io::Result<RespValue> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&encode(args))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some((value, _)) = parse(&buf)? {
            return Ok(value);
        }
        match stream.read(&mut chunk)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Async twin of [`resp_command`] (no timeout: wrap it in `tokio::time::timeout`);
/// safe to use through a [`super::ChaosProxy`] on the same runtime.
pub async fn resp_command_async(addr: SocketAddr, args: &[&str]) -> io::Result<RespValue> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(&encode(args)).await?;
    let mut buf = Vec::new();
    loop {
        if let Some((value, _)) = parse(&buf)? {
            return Ok(value);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}
