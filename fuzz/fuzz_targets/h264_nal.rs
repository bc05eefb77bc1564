//! What the recorder reads of H.264 from the network (`record::h264`): the NAL units of an
//! Annex B access unit, their conversion to length-prefixed units (copied and in place), the
//! picture size from a sequence parameter set, and the avcC record.
//!
//! Properties: no panic; the units are non-empty, non-overlapping slices of the input in
//! order, none holding a start code, and exactly what a byte-by-byte scan finds; the
//! length-prefixed form reads back as the same units, in place or copied; a picture size is
//! within 1..=16384; an avcC record is laid out as ISO/IEC 14496-15 says.
#![no_main]

use kioskd::record::h264::{
    NAL_PPS, NAL_SPS, avcc, into_length_prefixed, nal_type, nal_units, sps_picture_size, to_length_prefixed,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let units = nal_units(data);
    let base = data.as_ptr() as usize;
    let mut end = 0;
    for u in &units {
        assert!(!u.is_empty());
        let at = u.as_ptr() as usize - base;
        assert!(at >= end + 3 && at + u.len() <= data.len(), "in order, behind a start code");
        assert_eq!(&data[at - 3..at], [0, 0, 1]);
        end = at + u.len();
        assert!(!u.windows(3).any(|w| w == [0, 0, 1]), "a unit holds a start code");
    }
    assert_eq!(units, reference(data));

    let lp = to_length_prefixed(data);
    let mut back = Vec::new();
    let mut rest = &lp[..];
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        back.push(&rest[4..4 + len]);
        rest = &rest[4 + len..];
    }
    assert_eq!(back, units, "length-prefixed units read back");
    assert_eq!(into_length_prefixed(data.to_vec()), lp, "in place gives what a copy gives");

    for unit in units.iter().copied().chain([data]) {
        if let Some((w, h)) = sps_picture_size(unit) {
            assert_eq!(nal_type(unit), Some(NAL_SPS));
            assert!((1..=16_384).contains(&w) && (1..=16_384).contains(&h), "{w}x{h}");
        }
    }
    let sps = units.iter().find(|u| nal_type(u) == Some(NAL_SPS));
    let pps = units.iter().find(|u| nal_type(u) == Some(NAL_PPS));
    if let (Some(sps), Some(pps)) = (sps, pps)
        && let Some(rec) = avcc(sps, pps)
    {
        if let Err(e) = kioskd_fuzz::ebml::check_avcc(&rec) {
            panic!("{e}");
        }
        assert_eq!(&rec[8..8 + sps.len()], *sps);
        assert_eq!(&rec[rec.len() - pps.len()..], *pps);
    }
});

/// The byte-at-a-time scan (as in `record::h264`'s tests).
fn reference(au: &[u8]) -> Vec<&[u8]> {
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
