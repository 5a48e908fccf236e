//! One adb stream (an OPENed service) on the device side: input arrives as WRTE payloads from
//! the host and is read as a byte stream; output is cut into WRTE packets, each waiting for the
//! host's OKAY before the next (the protocol's flow control).

use super::wire::{A_CLSE, A_WRTE, encode};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The connection's write half, shared by all streams.
pub type Wire = Arc<Mutex<TcpStream>>;

pub fn send(wire: &Wire, packet: &[u8]) -> io::Result<()> {
    let mut w = wire
        .lock()
        .map_err(|_| io::Error::other("connection writer poisoned"))?;
    w.write_all(packet)?;
    w.flush()
}

/// Reads the bytes the host WRTEs to this stream; EOF when the host closes it.
#[derive(Debug)]
pub struct StreamIn {
    rx: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl StreamIn {
    pub fn new(rx: Receiver<Vec<u8>>) -> Self {
        Self {
            rx,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for StreamIn {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Writes to the host on this stream.
#[derive(Debug)]
pub struct StreamOut {
    wire: Wire,
    local: u32,
    remote: u32,
    max_payload: usize,
    acks: Mutex<Receiver<()>>,
    /// Set when either side closed the stream.
    pub closed: Arc<AtomicBool>,
    clse_sent: AtomicBool,
}

impl StreamOut {
    pub fn new(
        wire: Wire,
        local: u32,
        remote: u32,
        max_payload: usize,
        acks: Receiver<()>,
        closed: Arc<AtomicBool>,
    ) -> Self {
        Self {
            wire,
            local,
            remote,
            max_payload: max_payload.max(1024),
            acks: Mutex::new(acks),
            closed,
            clse_sent: AtomicBool::new(false),
        }
    }

    /// Sends `data` in WRTE packets, waiting for each OKAY. Fails once the stream is closed.
    pub fn write_all(&self, data: &[u8]) -> io::Result<()> {
        let acks = self
            .acks
            .lock()
            .map_err(|_| io::Error::other("stream ack lock poisoned"))?;
        for chunk in data.chunks(self.max_payload) {
            if self.closed.load(Ordering::Relaxed) {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            send(&self.wire, &encode(A_WRTE, self.local, self.remote, chunk))?;
            loop {
                match acks.recv_timeout(Duration::from_millis(200)) {
                    Ok(()) => break,
                    Err(RecvTimeoutError::Timeout) if !self.closed.load(Ordering::Relaxed) => {}
                    Err(_) => return Err(io::ErrorKind::BrokenPipe.into()),
                }
            }
        }
        Ok(())
    }

    /// Sends CLSE once.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        if !self.clse_sent.swap(true, Ordering::Relaxed) {
            let _ = send(&self.wire, &encode(A_CLSE, self.local, self.remote, &[]));
        }
    }
}

/// A `Write` adapter that batches small writes into packets of up to `cap` bytes.
#[derive(Debug)]
pub struct Batched<'a> {
    out: &'a StreamOut,
    buf: Vec<u8>,
    cap: usize,
}

impl<'a> Batched<'a> {
    pub fn new(out: &'a StreamOut, cap: usize) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(cap),
            cap,
        }
    }
}

impl Write for Batched<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.cap {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}
