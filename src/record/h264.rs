//! What the recorder needs to know of H.264: NAL units in an Annex B access unit, the picture
//! size from a sequence parameter set, and the `avcC` record that Matroska's
//! `V_MPEG4/ISO/AVC` track carries as codec private data.
//!
//! Everything here reads bytes that came from the network: every read is bounds-checked and a
//! malformed unit gives `None`, never a panic.

/// NAL unit types the recorder looks at.
pub const NAL_IDR: u8 = 5;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;

/// The NAL units of an Annex B access unit (start codes `00 00 01` or `00 00 00 01`), without
/// their start codes. Empty units are skipped.
pub fn nal_units(access_unit: &[u8]) -> Vec<&[u8]> {
    let starts = start_codes(access_unit);
    let mut units = Vec::with_capacity(starts.len());
    for (n, &(_, from)) in starts.iter().enumerate() {
        let to = starts.get(n + 1).map_or(access_unit.len(), |&(code_at, _)| code_at);
        if from < to {
            units.push(&access_unit[from..to]);
        }
    }
    units
}

/// Where each start code is, and where its NAL unit begins. `00 00 01` cannot overlap
/// itself, so the non-overlapping matches of a SIMD substring search are all of them.
fn start_codes(access_unit: &[u8]) -> Vec<(usize, usize)> {
    memchr::memmem::find_iter(access_unit, &[0, 0, 1])
        .map(|i| (if i > 0 && access_unit[i - 1] == 0 { i - 1 } else { i }, i + 3))
        .collect()
}

/// The type of a NAL unit (its first byte's low five bits).
pub fn nal_type(unit: &[u8]) -> Option<u8> {
    unit.first().map(|b| b & 0x1f)
}

/// An Annex B access unit as Matroska stores it: each NAL unit behind a 4-byte big-endian
/// length.
pub fn to_length_prefixed(access_unit: &[u8]) -> Vec<u8> {
    let units = nal_units(access_unit);
    let mut out = Vec::with_capacity(access_unit.len() + 4 * units.len());
    for unit in units {
        out.extend_from_slice(&(unit.len() as u32).to_be_bytes());
        out.extend_from_slice(unit);
    }
    out
}

/// [`to_length_prefixed`] without a copy when it can be done in place: when the access unit
/// begins with a start code and every start code is 4 bytes (as openh264 writes them), each
/// becomes the length of its unit.
pub fn into_length_prefixed(mut access_unit: Vec<u8>) -> Vec<u8> {
    let starts = start_codes(&access_unit);
    let ends = starts.iter().skip(1).map(|&(code_at, _)| code_at).chain([access_unit.len()]);
    let units: Vec<(usize, usize, usize)> =
        starts.iter().zip(ends).map(|(&(code_at, from), to)| (code_at, from, to)).collect();
    let in_place = units.first().is_some_and(|&(code_at, _, _)| code_at == 0)
        && units
            .iter()
            .all(|&(code_at, from, to)| from == code_at + 4 && from < to && to - from <= u32::MAX as usize);
    if !in_place {
        return to_length_prefixed(&access_unit);
    }
    for (code_at, from, to) in units {
        access_unit[code_at..from].copy_from_slice(&((to - from) as u32).to_be_bytes());
    }
    access_unit
}

/// The `AVCDecoderConfigurationRecord` (ISO/IEC 14496-15) of one SPS and one PPS, with 4-byte
/// NAL lengths.
pub fn avcc(sps: &[u8], pps: &[u8]) -> Option<Vec<u8>> {
    if sps.len() < 4 || pps.is_empty() || sps.len() > u16::MAX as usize || pps.len() > u16::MAX as usize {
        return None;
    }
    let mut out = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    out.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    out.extend_from_slice(sps);
    out.push(1);
    out.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    out.extend_from_slice(pps);
    Some(out)
}

/// Reads the bits of an RBSP (emulation prevention bytes already removed).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(bit))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }

    /// Unsigned Exp-Golomb.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some(((1u64 << zeros) - 1 + u64::from(self.bits(zeros)?)).min(u64::from(u32::MAX)) as u32)
    }

    /// Signed Exp-Golomb.
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// Removes emulation prevention bytes (`00 00 03` → `00 00`).
fn rbsp(unit: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(unit.len());
    let mut zeros = 0;
    for &b in unit {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// The displayed picture size (after cropping) that a sequence parameter set NAL unit (with its
/// one-byte NAL header) declares.
pub fn sps_picture_size(sps: &[u8]) -> Option<(u32, u32)> {
    if nal_type(sps)? != NAL_SPS {
        return None;
    }
    let data = rbsp(sps.get(1..)?);
    let mut r = Bits { data: &data, pos: 0 };
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    if matches!(profile, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format = r.ue()?;
        if chroma_format > 3 {
            return None;
        }
        if chroma_format == 3 {
            r.bit()?; // separate_colour_plane_flag
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            let n = r.ue()?;
            if n > 255 {
                return None;
            }
            for _ in 0..n {
                r.se()?;
            }
        }
        2 => {}
        _ => return None,
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = u64::from(r.bit()?);
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut crop_x, mut crop_y) = (0u64, 0u64);
    if r.bit()? == 1 {
        let (left, right, top, bottom) =
            (u64::from(r.ue()?), u64::from(r.ue()?), u64::from(r.ue()?), u64::from(r.ue()?));
        let (unit_x, unit_y) = match chroma_format {
            0 => (1, 2 - frame_mbs_only),
            1 => (2, 2 * (2 - frame_mbs_only)),
            2 => (2, 2 - frame_mbs_only),
            _ => (1, 2 - frame_mbs_only),
        };
        crop_x = unit_x * (left + right);
        crop_y = unit_y * (top + bottom);
    }
    let width = (width_mbs * 16).checked_sub(crop_x)?;
    let height = ((2 - frame_mbs_only) * height_units * 16).checked_sub(crop_y)?;
    if width == 0 || height == 0 || width > 16_384 || height > 16_384 {
        return None;
    }
    Some((width as u32, height as u32))
}

fn skip_scaling_list(r: &mut Bits<'_>, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()? + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Picture;
    use crate::media::codec::{VideoEncoder, VideoSettings};

    fn encoded_keyframe(width: u32, height: u32) -> Vec<u8> {
        let settings = VideoSettings { width, height, ..VideoSettings::default() };
        let mut enc = VideoEncoder::new(settings).expect("encoder");
        let pic = Picture::black(width, height, 0);
        let frame = enc.encode(&pic).expect("encode").expect("a frame");
        assert!(frame.keyframe);
        frame.data
    }

    #[test]
    fn the_picture_size_is_read_from_real_encoder_output() {
        for (w, h) in [(640, 480), (320, 240), (1280, 720), (328, 246)] {
            let au = encoded_keyframe(w, h);
            let units = nal_units(&au);
            let sps = units.iter().find(|u| nal_type(u) == Some(NAL_SPS)).expect("an SPS");
            assert!(units.iter().any(|u| nal_type(u) == Some(NAL_PPS)), "a PPS");
            assert!(units.iter().any(|u| nal_type(u) == Some(NAL_IDR)), "an IDR slice");
            assert_eq!(sps_picture_size(sps), Some((w, h)));
        }
    }

    #[test]
    fn length_prefixed_units_hold_the_same_units() {
        let au = encoded_keyframe(320, 240);
        let lp = to_length_prefixed(&au);
        let mut rest = &lp[..];
        let mut back = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            back.push(&rest[4..4 + len]);
            rest = &rest[4 + len..];
        }
        assert_eq!(back, nal_units(&au));
    }

    #[test]
    fn start_codes_of_both_lengths_are_split() {
        let au = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5];
        assert_eq!(nal_units(&au), [&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5][..]]);
        assert!(nal_units(&[1, 2, 3]).is_empty());
        assert!(nal_units(&[]).is_empty());
    }

    #[test]
    fn avcc_record_layout() {
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xaa];
        let pps = [0x68, 0xce];
        let rec = avcc(&sps, &pps).expect("record");
        assert_eq!(
            rec,
            [1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, 5, 0x67, 0x42, 0xc0, 0x1e, 0xaa, 1, 0, 2, 0x68, 0xce]
        );
        assert_eq!(avcc(&[0x67], &pps), None);
    }

    #[test]
    fn emulation_prevention_bytes_are_removed() {
        assert_eq!(rbsp(&[0, 0, 3, 1, 0, 0, 3, 0, 0, 3]), [0, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn an_access_unit_with_four_byte_start_codes_is_converted_without_a_copy() {
        let au = vec![0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65, 0x88, 0x84];
        let at = au.as_ptr();
        let out = into_length_prefixed(au);
        assert_eq!(out, [0, 0, 0, 2, 0x67, 0x42, 0, 0, 0, 2, 0x68, 0xce, 0, 0, 0, 3, 0x65, 0x88, 0x84]);
        assert_eq!(out.as_ptr(), at, "converted in place");
    }

    /// The byte-at-a-time scan that `nal_units` must agree with.
    fn nal_units_reference(au: &[u8]) -> Vec<&[u8]> {
        let mut starts = Vec::new();
        for i in 0..au.len().saturating_sub(2) {
            if au[i..i + 3] == [0, 0, 1] {
                starts.push((if i > 0 && au[i - 1] == 0 { i - 1 } else { i }, i + 3));
            }
        }
        let mut units = Vec::new();
        for (n, &(_, from)) in starts.iter().enumerate() {
            let to = starts.get(n + 1).map_or(au.len(), |&(code_at, _)| code_at);
            if from < to {
                units.push(&au[from..to]);
            }
        }
        units
    }

    proptest::proptest! {
        #[test]
        fn the_fast_scan_finds_what_a_byte_by_byte_scan_finds(
            data in proptest::collection::vec(proptest::sample::select(vec![0u8, 0, 0, 1, 1, 2, 3, 0x65, 0xff]), 0..300)
        ) {
            proptest::prop_assert_eq!(nal_units(&data), nal_units_reference(&data));
        }

        #[test]
        fn converting_in_place_gives_what_a_copy_gives(
            data in proptest::collection::vec(proptest::sample::select(vec![0u8, 0, 0, 1, 1, 2, 3, 0x65, 0xff]), 0..300),
            four_byte_codes in proptest::prelude::any::<bool>(),
        ) {
            // Half the cases an access unit as openh264 writes them (converted in place).
            let au = if four_byte_codes {
                data.split(|&b| b == 1).flat_map(|unit| [0, 0, 0, 1].into_iter().chain(unit.iter().map(|&b| b | 2))).collect()
            } else {
                data
            };
            proptest::prop_assert_eq!(into_length_prefixed(au.clone()), to_length_prefixed(&au));
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = nal_units(&data);
            let _ = to_length_prefixed(&data);
            let _ = into_length_prefixed(data.clone());
            let mut sps = vec![0x67];
            sps.extend_from_slice(&data);
            let _ = sps_picture_size(&sps);
            let _ = sps_picture_size(&data);
        }
    }
}
