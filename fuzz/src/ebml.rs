//! A strict reader of the Matroska subset that `kioskd::record` writes, and the checks the
//! `recorder` target makes on every file: every element inside its parent, the Segment's size
//! right, every block on a declared track, each track's times strictly increasing, each video
//! track starting at a keyframe, video blocks well-formed length-prefixed NAL units, and the
//! file agreeing with the recorder's own summary.

use std::collections::BTreeMap;

use kioskd::record::mkv::id;

/// (id with its marker bits, body) of one element.
pub type Element<'a> = (u32, &'a [u8]);

/// A variable-length integer at the front of `data`: (value, length). `keep_marker` for IDs.
fn vint(data: &[u8], keep_marker: bool) -> Result<(u64, usize), String> {
    let first = *data.first().ok_or("vint: no bytes")?;
    if first == 0 {
        return Err("vint: a first byte of 0 (longer than 8 bytes)".into());
    }
    let len = first.leading_zeros() as usize + 1;
    let bytes = data.get(..len).ok_or_else(|| format!("vint: {len} bytes, {} left", data.len()))?;
    let mut v = u64::from(if keep_marker { first } else { first & (0xFFu16 >> len) as u8 });
    for b in &bytes[1..] {
        v = (v << 8) | u64::from(*b);
    }
    Ok((v, len))
}

/// The elements that fill `data` exactly; an unknown size is allowed only for the Segment.
pub fn elements(data: &[u8]) -> Result<Vec<Element<'_>>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let (eid, il) = vint(&data[at..], true)?;
        if il > 4 {
            return Err(format!("element id of {il} bytes at {at}"));
        }
        let (size, sl) = vint(&data[at + il..], false)?;
        let start = at + il + sl;
        let unknown = size == (1u64 << (7 * sl)) - 1;
        let end = if unknown {
            if eid != u64::from(id::SEGMENT) {
                return Err(format!("element {eid:#x} of unknown size"));
            }
            data.len()
        } else {
            let end = (start as u64).checked_add(size).ok_or("size overflows")?;
            if end > data.len() as u64 {
                return Err(format!("element {eid:#x} at {at}: {size} bytes, {} left", data.len() - start));
            }
            end as usize
        };
        out.push((eid as u32, &data[start..end]));
        at = end;
    }
    Ok(out)
}

fn uint(data: &[u8]) -> Result<u64, String> {
    if data.len() > 8 {
        return Err(format!("uint of {} bytes", data.len()));
    }
    Ok(data.iter().fold(0, |v, b| (v << 8) | u64::from(*b)))
}

fn child<'a>(children: &[Element<'a>], eid: u32) -> Result<&'a [u8], String> {
    children.iter().find(|(i, _)| *i == eid).map(|(_, b)| *b).ok_or_else(|| format!("no child {eid:#x}"))
}

/// One track as the file declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub number: u8,
    /// 1 video, 2 audio.
    pub kind: u8,
    pub size: Option<(u32, u32)>,
}

/// A block as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBlock {
    pub track: u8,
    pub ts_ms: u64,
    pub keyframe: bool,
}

/// What a recording file holds.
#[derive(Debug, Default)]
pub struct Recording {
    pub tracks: Vec<Track>,
    pub blocks: Vec<ReadBlock>,
    pub duration_ms: Option<f64>,
}

/// Reads and checks a recording: `finished` when the patches of `Recorder::finish` were
/// applied (the Segment has its size and Info its Duration), else a file cut off after a
/// `take_output` (the Segment's size unknown, whole Clusters only). An empty file is a
/// recording whose header was not written yet.
pub fn read(file: &[u8], finished: bool) -> Result<Recording, String> {
    let mut rec = Recording::default();
    if file.is_empty() && !finished {
        return Ok(rec);
    }
    let top = elements(file)?;
    let [(ebml_id, ebml), (segment_id, segment)] = top[..] else {
        return Err(format!("{} top-level elements, expected EBML and Segment", top.len()));
    };
    if ebml_id != id::EBML || segment_id != id::SEGMENT {
        return Err(format!("top-level elements {ebml_id:#x}, {segment_id:#x}"));
    }
    let doc_type = child(&elements(ebml)?, id::DOC_TYPE)?;
    if doc_type != b"matroska" {
        return Err("doc type is not matroska".into());
    }
    // The Segment's size field: 8 bytes, right after its 4-byte ID.
    let size_at = file.len() - segment.len() - 8;
    let (size, sl) = vint(&file[size_at..], false)?;
    if sl != 8 {
        return Err(format!("segment size of {sl} bytes"));
    }
    let unknown = size == (1u64 << 56) - 1;
    match (finished, unknown) {
        (true, true) => return Err("finished file with a segment of unknown size".into()),
        (true, false) if size != segment.len() as u64 => {
            return Err(format!("segment size {size}, {} bytes follow", segment.len()));
        }
        (false, false) => return Err("unfinished file with a segment size".into()),
        _ => {}
    }

    let children = elements(segment)?;
    let mut kinds = children.iter().map(|(i, _)| *i);
    if kinds.next() != Some(id::INFO) || kinds.next() != Some(id::TRACKS) {
        return Err("the segment does not begin with Info and Tracks".into());
    }
    if let Some(other) = kinds.find(|&i| i != id::CLUSTER) {
        return Err(format!("element {other:#x} among the clusters"));
    }

    let info = elements(children[0].1)?;
    if uint(child(&info, id::TIMESTAMP_SCALE)?)? != kioskd::record::mkv::TIMESTAMP_SCALE_NS {
        return Err("timestamp scale".into());
    }
    match (finished, child(&info, id::DURATION), child(&info, id::VOID)) {
        (true, Ok(d), Err(_)) => {
            let d: [u8; 8] = d.try_into().map_err(|_| "duration is not an 8-byte float")?;
            rec.duration_ms = Some(f64::from_be_bytes(d));
        }
        (false, Err(_), Ok(_)) => {}
        _ => return Err("Info: a Duration when finished, its reserved Void before".into()),
    }

    for (eid, entry) in elements(children[1].1)? {
        if eid != id::TRACK_ENTRY {
            return Err(format!("element {eid:#x} in Tracks"));
        }
        let e = elements(entry)?;
        let number = uint(child(&e, id::TRACK_NUMBER)?)?;
        let number = u8::try_from(number).map_err(|_| format!("track number {number}"))?;
        let kind = uint(child(&e, id::TRACK_TYPE)?)? as u8;
        let codec = child(&e, id::CODEC_ID)?;
        let private = child(&e, id::CODEC_PRIVATE)?;
        let size = match (kind, codec) {
            (1, b"V_MPEG4/ISO/AVC") => {
                check_avcc(private)?;
                let v = elements(child(&e, id::VIDEO)?)?;
                let w = uint(child(&v, id::PIXEL_WIDTH)?)? as u32;
                let h = uint(child(&v, id::PIXEL_HEIGHT)?)? as u32;
                if w == 0 || h == 0 || w > 16_384 || h > 16_384 {
                    return Err(format!("picture size {w}x{h}"));
                }
                Some((w, h))
            }
            (2, b"A_OPUS") => {
                if !private.starts_with(b"OpusHead") || private.len() != 19 {
                    return Err("Opus codec private is not an OpusHead".into());
                }
                None
            }
            _ => return Err(format!("track type {kind} with codec {codec:?}")),
        };
        if rec.tracks.iter().any(|t| t.number == number) || number == 0 {
            return Err(format!("track number {number} twice or 0"));
        }
        rec.tracks.push(Track { number, kind, size });
    }

    let mut last: BTreeMap<u8, u64> = BTreeMap::new();
    for (_, cluster) in &children[2..] {
        let c = elements(cluster)?;
        let Some(&(first, ts)) = c.first() else { return Err("an empty cluster".into()) };
        if first != id::TIMESTAMP {
            return Err("a cluster does not begin with its Timestamp".into());
        }
        let base = uint(ts)?;
        if c.len() < 2 {
            return Err("a cluster without blocks".into());
        }
        for &(bid, b) in &c[1..] {
            if bid != id::SIMPLE_BLOCK {
                return Err(format!("element {bid:#x} in a cluster"));
            }
            let (track, tl) = vint(b, false)?;
            let head = b.get(tl..tl + 3).ok_or("a block shorter than its header")?;
            let rel = i16::from_be_bytes([head[0], head[1]]);
            if rel < 0 {
                return Err(format!("a block {rel} ms before its cluster"));
            }
            let flags = head[2];
            if flags & 0x7F != 0 {
                return Err(format!("block flags {flags:#x}: no lacing, nothing but the keyframe bit"));
            }
            let data = &b[tl + 3..];
            let t = rec
                .tracks
                .iter()
                .find(|t| u64::from(t.number) == track)
                .ok_or_else(|| format!("a block on undeclared track {track}"))?;
            let ts_ms = base.checked_add(rel as u64).ok_or("block time overflows")?;
            if last.get(&t.number).is_some_and(|&l| ts_ms <= l) {
                return Err(format!("track {}: a block at {ts_ms} ms after one at {:?}", t.number, last[&t.number]));
            }
            let keyframe = flags & 0x80 != 0;
            if t.kind == 1 {
                if !last.contains_key(&t.number) && !keyframe {
                    return Err(format!("video track {} does not start at a keyframe", t.number));
                }
                check_length_prefixed(data)?;
            }
            last.insert(t.number, ts_ms);
            rec.blocks.push(ReadBlock { track: t.number, ts_ms, keyframe });
        }
    }
    if let (Some(d), Some(max)) = (rec.duration_ms, rec.blocks.iter().map(|b| b.ts_ms).max())
        && d < max as f64
    {
        return Err(format!("duration {d} ms before the last block at {max} ms"));
    }
    Ok(rec)
}

/// NAL units each behind a 4-byte length, filling `data` exactly.
pub fn check_length_prefixed(mut data: &[u8]) -> Result<(), String> {
    while !data.is_empty() {
        let len = data.get(..4).ok_or("a NAL length cut short")?;
        let len = u32::from_be_bytes(len.try_into().map_err(|_| "4 bytes")?) as usize;
        if len == 0 {
            return Err("an empty NAL unit".into());
        }
        data = data.get(4 + len..).ok_or_else(|| format!("a NAL unit of {len} bytes, {} left", data.len() - 4))?;
    }
    Ok(())
}

/// An `AVCDecoderConfigurationRecord` with one SPS and one PPS, as `record::h264::avcc` makes.
pub fn check_avcc(r: &[u8]) -> Result<(), String> {
    let bad = || format!("avcC record {r:02x?}");
    if r.len() < 6 || r[0] != 1 || r[4] != 0xff || r[5] != 0xe1 {
        return Err(bad());
    }
    let sps_len = u16::from_be_bytes([*r.get(6).ok_or_else(bad)?, *r.get(7).ok_or_else(bad)?]) as usize;
    let sps = r.get(8..8 + sps_len).ok_or_else(bad)?;
    if sps.len() < 4 || sps[0] & 0x1f != 7 || sps[1..4] != r[1..4] {
        return Err(bad());
    }
    let rest = &r[8 + sps_len..];
    if rest.len() < 3 || rest[0] != 1 {
        return Err(bad());
    }
    let pps_len = u16::from_be_bytes([rest[1], rest[2]]) as usize;
    if rest.len() != 3 + pps_len || pps_len == 0 || rest[3] & 0x1f != 8 {
        return Err(bad());
    }
    Ok(())
}
