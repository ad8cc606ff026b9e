//! The bytes the benchmark moves: the emulator source's pattern (byte i =
//! (i * 31 + 7) % 251), so one precomputed block feeds uploads and checks
//! downloads and echoes by slice comparison, without per-byte work on the
//! measured path.

use std::sync::LazyLock;

use sha2::{Digest as _, Sha256};

use crate::emulator::source_byte;

/// Client reads and writes: as large as the tunnels' frames, so the client is
/// never the side that chops the stream finer.
pub const CHUNK: usize = 64 * 1024;
/// The pattern repeats every 251 bytes.
const PERIOD: usize = 251;

/// One chunk of pattern starting at any phase.
static BLOCK: LazyLock<Vec<u8>> =
    LazyLock::new(|| (0..(CHUNK + PERIOD) as u64).map(source_byte).collect());

/// The `len` pattern bytes at stream offset `offset`; `len` ≤ [`CHUNK`].
pub fn slice(offset: u64, len: usize) -> &'static [u8] {
    let start = (offset % PERIOD as u64) as usize;
    &BLOCK[start..start + len.min(CHUNK)]
}

/// Whether `data` equals the pattern at stream offset `offset`.
pub fn matches(offset: u64, data: &[u8]) -> bool {
    let mut at = offset;
    data.chunks(CHUNK).all(|piece| {
        let ok = piece == slice(at, piece.len());
        at += piece.len() as u64;
        ok
    })
}

/// SHA-256 (hex) of the first `len` pattern bytes: what a sink must report.
pub fn sha256_hex(len: u64) -> String {
    let mut hasher = Sha256::new();
    let mut at = 0;
    while at < len {
        let n = (len - at).min(CHUNK as u64) as usize;
        hasher.update(slice(at, n));
        at += n as u64;
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_follow_the_source_pattern() {
        let s = slice(1000, 300);
        assert!(
            s.iter()
                .enumerate()
                .all(|(i, &b)| b == source_byte(1000 + i as u64))
        );
        assert!(matches(
            7,
            &(7..7 + 200_000).map(source_byte).collect::<Vec<_>>()
        ));
        assert!(!matches(8, &(7..100).map(source_byte).collect::<Vec<_>>()));
    }
}
