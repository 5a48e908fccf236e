//! Dequantizing GGML tensor data to `f32`.
//!
//! Block layouts (ggml's `ggml-common.h`), 32 values per block:
//! - `Q4_0`: f16 scale `d`, 16 bytes of nibbles; `x = d * (q - 8)`.
//! - `Q4_1`: f16 scale `d`, f16 minimum `m`, 16 bytes of nibbles; `x = d * q + m`.
//! - `Q8_0`: f16 scale `d`, 32 signed bytes; `x = d * q`.
//!
//! In the 4-bit formats byte `j` of the 16 holds value `j` in its low nibble and value `j + 16`
//! in its high nibble.
//!
//! Q5_0, Q5_1, the K-quants Q2_K to Q6_K (blocks of 256) and BF16 are decoded too, each
//! described at its function; `llamacpp`'s tests hold every one to ggml's own decoding of
//! random blocks.

use crate::gguf::GgmlType;
use half::f16;

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Dequantizes `bytes` of type `ty` into `out` (whose length is the element count).
///
/// Returns `None` when `ty` is not decodable or the lengths disagree; the GGUF reader has
/// already checked sizes for tensors it hands out, so callers turn this into their own error.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Option<()> {
    let (block_elems, block_bytes) = ty.block_layout()?;
    let (block_elems, block_bytes) = (block_elems as usize, block_bytes as usize);
    if !out.len().is_multiple_of(block_elems)
        || bytes.len() != out.len() / block_elems * block_bytes
    {
        return None;
    }
    let blocks = bytes
        .chunks_exact(block_bytes)
        .zip(out.chunks_exact_mut(block_elems));
    match ty {
        GgmlType::F32 => {
            for (b, o) in blocks {
                o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (b, o) in blocks {
                o[0] = f16_at(b, 0);
            }
        }
        GgmlType::Q4_0 => {
            for (b, o) in blocks {
                let d = f16_at(b, 0);
                for j in 0..16 {
                    let q = b[2 + j];
                    o[j] = d * (f32::from(q & 0x0f) - 8.0);
                    o[j + 16] = d * (f32::from(q >> 4) - 8.0);
                }
            }
        }
        GgmlType::Q4_1 => {
            for (b, o) in blocks {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                for j in 0..16 {
                    let q = b[4 + j];
                    o[j] = d * f32::from(q & 0x0f) + m;
                    o[j + 16] = d * f32::from(q >> 4) + m;
                }
            }
        }
        GgmlType::Q8_0 => {
            for (b, o) in blocks {
                let d = f16_at(b, 0);
                for j in 0..32 {
                    o[j] = d * f32::from(b[2 + j] as i8);
                }
            }
        }
        GgmlType::Other(code) => {
            let decode = decoder(code)?;
            for (b, o) in blocks {
                decode(b, o);
            }
        }
    }
    Some(())
}

/// Decodes one block (its bytes) into its values.
pub(crate) type BlockDecoder = fn(&[u8], &mut [f32]);

/// The decoder of one block of a type beyond F32, F16, Q4_0, Q4_1 and Q8_0, by ggml code:
/// Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and BF16 (what [`GgmlType::decodable`] asks).
pub(crate) fn decoder(code: u32) -> Option<BlockDecoder> {
    let decode: BlockDecoder = match code {
        6 => q5_0,
        7 => q5_1,
        10 => q2_k,
        11 => q3_k,
        12 => q4_k,
        13 => q5_k,
        14 => q6_k,
        30 => |b, o| o[0] = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16),
        _ => return None,
    };
    Some(decode)
}

/// The fifth bits of a Q5 block's 32 values, `qh`, as the bit for value `j` (`0..32`).
fn fifth_bit(qh: u32, j: usize) -> u8 {
    (((qh >> j) & 1) as u8) << 4
}

/// `Q5_0`: f16 `d`, 32 high bits `qh`, 16 bytes of low nibbles; `x = d (q - 16)`.
fn q5_0(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for j in 0..16 {
        let q = b[6 + j];
        o[j] = d * (f32::from((q & 0x0f) | fifth_bit(qh, j)) - 16.0);
        o[j + 16] = d * (f32::from((q >> 4) | fifth_bit(qh, j + 16)) - 16.0);
    }
}

/// `Q5_1`: f16 `d` and minimum `m`, `qh`, 16 bytes of low nibbles; `x = d q + m`.
fn q5_1(b: &[u8], o: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for j in 0..16 {
        let q = b[8 + j];
        o[j] = d * f32::from((q & 0x0f) | fifth_bit(qh, j)) + m;
        o[j + 16] = d * f32::from((q >> 4) | fifth_bit(qh, j + 16)) + m;
    }
}

/// `Q2_K` (256 values): 16 bytes of 4-bit scale and minimum pairs (one per 16 values), 64
/// bytes of 2-bit values, f16 `d` and `dmin`. Each 32-byte run of values holds four
/// groups of 32 (by bit pair), each two groups of 16 with a scale each: `x = d s q - dmin m`.
fn q2_k(b: &[u8], o: &mut [f32]) {
    let (scales, qs) = (&b[..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    let mut y = o.iter_mut();
    let mut is = 0;
    for q in qs.chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for half in q.chunks_exact(16) {
                let sc = scales[is];
                is += 1;
                let (dl, ml) = (d * f32::from(sc & 0x0f), dmin * f32::from(sc >> 4));
                for (&v, y) in half.iter().zip(y.by_ref()) {
                    *y = dl * f32::from((v >> shift) & 3) - ml;
                }
            }
        }
    }
}

/// `Q3_K` (256 values): 32 bytes of high bits (bit `i` of byte `l` for group `i`), 64 bytes of
/// low bit pairs, 12 bytes of 6-bit scales (16, offset by 32), f16 `d`: `x = d (s - 32) (q -
/// 4 if the high bit is clear)`.
fn q3_k(b: &[u8], o: &mut [f32]) {
    let (hmask, qs, packed) = (&b[..32], &b[32..96], &b[96..108]);
    let d = f16_at(b, 108);
    let scales: [i32; 16] = std::array::from_fn(|i| {
        // Low 4 bits from bytes 0..8 (nibbles), high 2 bits from bytes 8..12.
        let low = (packed[i % 8] >> (4 * (i / 8))) & 0x0f;
        let high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
        i32::from(low | (high << 4)) - 32
    });
    let mut y = o.iter_mut();
    let (mut is, mut bit) = (0, 0);
    for q in qs.chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for (h, half) in q.chunks_exact(16).enumerate() {
                let dl = d * scales[is] as f32;
                is += 1;
                for (l, (&v, y)) in half.iter().zip(y.by_ref()).enumerate() {
                    let high = hmask[16 * h + l] >> bit & 1;
                    let q = i32::from((v >> shift) & 3) - if high == 0 { 4 } else { 0 };
                    *y = dl * q as f32;
                }
            }
            bit += 1;
        }
    }
}

/// The 6-bit scale and minimum of group `j` (`0..8`) of a Q4_K or Q5_K block's 12 bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    };
    (f32::from(sc), f32::from(m))
}

/// `Q4_K` (256 values): f16 `d` and `dmin`, 12 bytes of 6-bit scales and minimums (8 groups
/// of 32), 128 bytes of nibbles (each 32 bytes: one group in the low nibbles, the next in the
/// high ones): `x = d s q - dmin m`.
fn q4_k(b: &[u8], o: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for (g, (q, y)) in qs.chunks_exact(32).zip(o.chunks_exact_mut(64)).enumerate() {
        let (s1, m1) = scale_min_k4(2 * g, scales);
        let (s2, m2) = scale_min_k4(2 * g + 1, scales);
        let (d1, m1, d2, m2) = (d * s1, dmin * m1, d * s2, dmin * m2);
        for (l, &v) in q.iter().enumerate() {
            y[l] = d1 * f32::from(v & 0x0f) - m1;
            y[l + 32] = d2 * f32::from(v >> 4) - m2;
        }
    }
}

/// `Q5_K` (256 values): as Q4_K, with 32 bytes of fifth bits (bit `2g` and `2g + 1` of byte
/// `l` for the two groups of each 32 bytes of nibbles).
fn q5_k(b: &[u8], o: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for (g, (q, y)) in qs.chunks_exact(32).zip(o.chunks_exact_mut(64)).enumerate() {
        let (s1, m1) = scale_min_k4(2 * g, scales);
        let (s2, m2) = scale_min_k4(2 * g + 1, scales);
        let (d1, m1, d2, m2) = (d * s1, dmin * m1, d * s2, dmin * m2);
        for (l, &v) in q.iter().enumerate() {
            let h1 = (qh[l] >> (2 * g)) & 1;
            let h2 = (qh[l] >> (2 * g + 1)) & 1;
            y[l] = d1 * f32::from((v & 0x0f) | (h1 << 4)) - m1;
            y[l + 32] = d2 * f32::from((v >> 4) | (h2 << 4)) - m2;
        }
    }
}

/// `Q6_K` (256 values): 128 bytes of low nibbles, 64 bytes of high bit pairs, 16 signed 8-bit
/// scales (one per 16 values), f16 `d`: `x = d s (q - 32)`.
fn q6_k(b: &[u8], o: &mut [f32]) {
    let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for (n, y) in o.chunks_exact_mut(128).enumerate() {
        let (ql, qh, sc) = (&ql[64 * n..], &qh[32 * n..], &sc[8 * n..]);
        for l in 0..32 {
            let is = l / 16;
            let q = |low: u8, high: u8| f32::from((low | (high << 4)) as i8 - 32);
            let q1 = q(ql[l] & 0x0f, qh[l] & 3);
            let q2 = q(ql[l + 32] & 0x0f, (qh[l] >> 2) & 3);
            let q3 = q(ql[l] >> 4, (qh[l] >> 4) & 3);
            let q4 = q(ql[l + 32] >> 4, (qh[l] >> 6) & 3);
            let s = |i: usize| d * f32::from(sc[is + i] as i8);
            y[l] = s(0) * q1;
            y[l + 32] = s(2) * q2;
            y[l + 64] = s(4) * q3;
            y[l + 96] = s(6) * q4;
        }
    }
}

/// Encodes `values` (a multiple of 32) as `Q8_0`, for tests and the synthetic model.
pub fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / 32 * 34);
    for block in values.chunks(32) {
        let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|v| (v * inv).round() as i8 as u8));
    }
    out
}

/// Encodes `values` (a multiple of 32) as `Q4_1`, for tests and the synthetic model.
pub fn quantize_q4_1(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / 32 * 20);
    for block in values.chunks(32) {
        let min = block.iter().copied().fold(f32::INFINITY, f32::min);
        let max = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 15.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
        let q = |v: f32| (((v - min) * inv).round() as i32).clamp(0, 15) as u8;
        for j in 0..16 {
            out.push(q(block[j]) | (q(block[j + 16]) << 4));
        }
    }
    out
}

/// `blocks` random blocks of `ty` (one of [`decoder`]'s types) for tests: random bytes but
/// for the f16 fields (where ggml's block structs put them), which hold finite values in
/// `[-2, 2]`, so that every packing of scales, high bits and signs is exercised.
#[cfg(test)]
pub(crate) fn random_blocks(
    ty: GgmlType,
    blocks: usize,
    rng: &mut crate::load::SplitMix64,
) -> Vec<u8> {
    let size = ty.block_layout().expect("sized").1 as usize;
    let halves: &[usize] = match ty.code() {
        6 => &[0],
        7 | 12 | 13 => &[0, 2],
        10 => &[80, 82],
        11 => &[108],
        14 => &[208],
        _ => &[],
    };
    let mut bytes: Vec<u8> = (0..blocks * size)
        .map(|_| rng.next_u64().to_le_bytes()[0])
        .collect();
    for block in bytes.chunks_exact_mut(size) {
        for &at in halves {
            let v = (rng.next_u64() % 2001) as f32 / 500.0 - 2.0;
            block[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q4_1_hand_computed_block() {
        // d = 0.5, m = -1.0; low nibbles 0..15, high nibbles 15..0.
        let mut b = Vec::new();
        b.extend_from_slice(&h(0.5));
        b.extend_from_slice(&h(-1.0));
        for j in 0..16u8 {
            b.push(j | ((15 - j) << 4));
        }
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q4_1, &b, &mut out).unwrap();
        assert_eq!(out[0], -1.0); // 0.5 * 0 - 1
        assert_eq!(out[3], 0.5); // 0.5 * 3 - 1
        assert_eq!(out[15], 6.5); // 0.5 * 15 - 1
        assert_eq!(out[16], 6.5); // high nibble of byte 0 is 15
        assert_eq!(out[31], -1.0); // high nibble of byte 15 is 0
    }

    #[test]
    fn q4_0_hand_computed_block() {
        let mut b = Vec::new();
        b.extend_from_slice(&h(2.0));
        for j in 0..16u8 {
            b.push(j | (8 << 4));
        }
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q4_0, &b, &mut out).unwrap();
        assert_eq!(out[0], -16.0); // 2 * (0 - 8)
        assert_eq!(out[8], 0.0);
        assert_eq!(out[15], 14.0); // 2 * (15 - 8)
        assert!(out[16..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn q8_0_hand_computed_block() {
        let mut b = Vec::new();
        b.extend_from_slice(&h(0.25));
        for j in 0..32i8 {
            b.push((j - 16) as u8);
        }
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q8_0, &b, &mut out).unwrap();
        assert_eq!(out[0], -4.0);
        assert_eq!(out[16], 0.0);
        assert_eq!(out[31], 3.75);
    }

    #[test]
    fn f16_and_f32() {
        let mut out = [0f32; 2];
        let b: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        dequantize(GgmlType::F32, &b, &mut out).unwrap();
        assert_eq!(out, [1.5, -2.0]);
        let b: Vec<u8> = h(0.125).into_iter().chain(h(-3.0)).collect();
        dequantize(GgmlType::F16, &b, &mut out).unwrap();
        assert_eq!(out, [0.125, -3.0]);
    }

    #[test]
    fn encoders_round_trip_within_one_step() {
        let values: Vec<f32> = (0..64)
            .map(|i| ((i * 37) % 23) as f32 / 7.0 - 1.3)
            .collect();
        let mut out = vec![0f32; 64];
        dequantize(GgmlType::Q8_0, &quantize_q8_0(&values), &mut out).unwrap();
        for (a, b) in values.iter().zip(&out) {
            assert!((a - b).abs() < 0.02, "{a} vs {b}");
        }
        dequantize(GgmlType::Q4_1, &quantize_q4_1(&values), &mut out).unwrap();
        for (a, b) in values.iter().zip(&out) {
            assert!((a - b).abs() < 0.12, "{a} vs {b}");
        }
    }

    #[test]
    fn length_mismatch_is_refused() {
        let mut out = [0f32; 32];
        assert!(dequantize(GgmlType::Q4_1, &[0u8; 19], &mut out).is_none());
        assert!(dequantize(GgmlType::Other(99), &[], &mut []).is_none());
    }
}
