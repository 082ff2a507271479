//! A lean blocking anvil client for the load generator: one unix socket, a fixed read buffer,
//! no allocation per request. Both anvils are driven by exactly this code, so the client's
//! own cost is the same on both sides of every ratio.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{BenchError, Result};
use crate::wire::anvil::VERSION_LINE;

/// Read buffer size; dumps are read through it in chunks.
const READ_BUF: usize = 64 * 1024;

/// One connection to an anvil socket, handshake sent.
pub(crate) struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Client {
    /// Connects, sets `timeout` on reads and writes, sends the VERSION line.
    pub(crate) fn connect(path: &Path, timeout: Duration) -> Result<Client> {
        let stream = UnixStream::connect(path)
            .map_err(|e| BenchError::io(format!("connect {}", path.display()), e))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| BenchError::io("set socket timeouts", e))?;
        let mut client = Client {
            stream,
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
        };
        client.write_all(VERSION_LINE)?;
        Ok(client)
    }

    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .map_err(|e| BenchError::io("anvil: write", e))
    }

    /// Refills the buffer (keeping unread bytes); fails at EOF.
    fn fill(&mut self) -> Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(BenchError::Protocol("reply line longer than 64 KiB".into()));
        }
        let n = self
            .stream
            .read(&mut self.buf[self.end..])
            .map_err(|e| BenchError::io("anvil: read", e))?;
        if n == 0 {
            return Err(BenchError::Protocol("anvil closed the connection".into()));
        }
        self.end += n;
        Ok(())
    }

    /// Reads one reply line (without its LF).
    pub(crate) fn read_line(&mut self) -> Result<&[u8]> {
        loop {
            if let Some(lf) = memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                let line = self.start..self.start + lf;
                self.start += lf + 1;
                return Ok(&self.buf[line]);
            }
            self.fill()?;
        }
    }

    /// Sends a complete request line (LF included) and reads a decimal count reply.
    pub(crate) fn count(&mut self, request: &[u8]) -> Result<u64> {
        self.write_all(request)?;
        let line = self.read_line()?;
        parse_count(line)
            .ok_or_else(|| BenchError::Protocol(format!("bad count reply {:?}", bstr(line))))
    }

    /// Sends `CONNECT-DUMP` and reads the reply up to its empty terminator line; returns the
    /// number of rows.
    pub(crate) fn connect_dump(&mut self) -> Result<usize> {
        self.write_all(b"CONNECT-DUMP\n")?;
        let mut rows = 0;
        let mut at_line_start = true;
        loop {
            let data = &self.buf[self.start..self.end];
            let mut pos = 0;
            while let Some(lf) = memchr::memchr(b'\n', &data[pos..]) {
                if at_line_start && lf == 0 {
                    self.start += pos + 1;
                    return Ok(rows);
                }
                rows += 1;
                pos += lf + 1;
                at_line_start = true;
            }
            if pos < data.len() {
                at_line_start = false;
            }
            // Everything in the buffer is consumed (a partial row needs no keeping).
            self.start = 0;
            self.end = 0;
            self.fill()?;
        }
    }
}

fn parse_count(line: &[u8]) -> Option<u64> {
    if line.is_empty() || line.len() > 19 || !line.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(line.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn bstr(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::parse_count;

    #[test]
    fn count_replies() {
        assert_eq!(parse_count(b"0"), Some(0));
        assert_eq!(parse_count(b"1000000"), Some(1_000_000));
        assert_eq!(parse_count(b""), None);
        assert_eq!(parse_count(b"1 2"), None);
        assert_eq!(parse_count(b"-1"), None);
    }
}
