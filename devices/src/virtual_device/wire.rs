//! The adb transport's packet format: a 24-byte little-endian header (command, arg0, arg1,
//! payload length, payload byte sum, command XOR 0xffffffff) and the payload.

use std::io::{self, Read};

pub const A_CNXN: u32 = u32::from_le_bytes(*b"CNXN");
pub const A_OPEN: u32 = u32::from_le_bytes(*b"OPEN");
pub const A_OKAY: u32 = u32::from_le_bytes(*b"OKAY");
pub const A_WRTE: u32 = u32::from_le_bytes(*b"WRTE");
pub const A_CLSE: u32 = u32::from_le_bytes(*b"CLSE");
pub const A_AUTH: u32 = u32::from_le_bytes(*b"AUTH");
/// Protocol version with checksums optional for the receiver (we still send real ones).
pub const A_VERSION: u32 = 0x0100_0001;
/// Largest payload we accept in one packet (told to the host in CNXN).
pub const MAX_PAYLOAD: u32 = 256 * 1024;
/// Largest payload we read at all (hosts announce up to 1 MiB).
const HARD_LIMIT: u32 = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub cmd: u32,
    pub arg0: u32,
    pub arg1: u32,
    pub data: Vec<u8>,
}

pub fn checksum(data: &[u8]) -> u32 {
    data.iter()
        .fold(0u32, |acc, &b| acc.wrapping_add(u32::from(b)))
}

pub fn read_packet(r: &mut impl Read) -> io::Result<Packet> {
    let mut h = [0u8; 24];
    r.read_exact(&mut h)?;
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let (cmd, arg0, arg1, len, _sum, magic) =
        (word(0), word(4), word(8), word(12), word(16), word(20));
    if magic != cmd ^ 0xffff_ffff {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad packet magic for command {cmd:#010x}"),
        ));
    }
    if len > HARD_LIMIT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("packet payload of {len} bytes exceeds {HARD_LIMIT}"),
        ));
    }
    let mut data = vec![0u8; len as usize];
    r.read_exact(&mut data)?;
    Ok(Packet {
        cmd,
        arg0,
        arg1,
        data,
    })
}

pub fn encode(cmd: u32, arg0: u32, arg1: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + data.len());
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    for w in [cmd, arg0, arg1, len, checksum(data), cmd ^ 0xffff_ffff] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checksum() {
        let bytes = encode(A_WRTE, 7, 9, b"hello");
        assert_eq!(&bytes[..4], b"WRTE");
        assert_eq!(u32::from_le_bytes(bytes[16..20].try_into().unwrap()), 532);
        let p = read_packet(&mut bytes.as_slice()).unwrap();
        assert_eq!(
            (p.cmd, p.arg0, p.arg1, p.data.as_slice()),
            (A_WRTE, 7, 9, &b"hello"[..])
        );
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(read_packet(&mut bad.as_slice()).is_err());
    }
}
