//! A Matroska writer for live recording (RFC 9559): just what a call recording needs.
//!
//! Layout: EBML header, then one Segment of unknown size holding Info, Tracks and Clusters.
//! A Cluster is written whole, with its size, once it is complete (about a second of media),
//! so a file cut off at any point (a crash, a full disk) is a valid file up to its last whole
//! Cluster: players read a Segment of unknown size to its end. When the recording finishes,
//! [`Layout::finish`] gives the patches that turn it into a regular file: the Segment's real
//! size and the Duration in the space reserved for it.
//!
//! No crate was kept for this: the Matroska writers on crates.io either wrap libwebm (WebM:
//! VP8/VP9/AV1 only, no H.264) or write one video and one audio track; a call has four.

/// Element IDs (with their length marker bits, as written).
pub mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const INFO: u32 = 0x1549_A966;
    pub const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const DURATION: u32 = 0x4489;
    pub const DATE_UTC: u32 = 0x4461;
    pub const TITLE: u32 = 0x7BA9;
    pub const VOID: u32 = 0xEC;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const FLAG_LACING: u32 = 0x9C;
    pub const NAME: u32 = 0x536E;
    pub const LANGUAGE: u32 = 0x22_B59C;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const CODEC_DELAY: u32 = 0x56AA;
    pub const SEEK_PRE_ROLL: u32 = 0x56BB;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const AUDIO: u32 = 0xE1;
    pub const SAMPLING_FREQUENCY: u32 = 0xB5;
    pub const CHANNELS: u32 = 0x9F;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMESTAMP: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
}

/// The 8-byte "unknown size" marker.
const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
/// Bytes reserved in Info for the Duration (ID 2 + size 1 + float 8).
const DURATION_BYTES: usize = 11;
/// Nanoseconds per timestamp tick: timestamps are in milliseconds.
pub const TIMESTAMP_SCALE_NS: u64 = 1_000_000;
/// Seconds from the Unix epoch to Matroska's (2001-01-01T00:00:00 UTC).
const MATROSKA_EPOCH_UNIX_S: i64 = 978_307_200;

/// Appends an element ID.
pub fn put_id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(3);
    out.extend_from_slice(&bytes[skip..]);
}

/// Appends an element data size as the shortest variable-length integer.
pub fn put_size(out: &mut Vec<u8>, size: u64) {
    // A length-n vint holds 7n bits; all ones is reserved for "unknown".
    let n = (1..=8).find(|&n| size < (1u64 << (7 * n)) - 1).unwrap_or(8);
    let marked = size | (1u64 << (7 * n));
    out.extend_from_slice(&marked.to_be_bytes()[8 - n as usize..]);
}

/// Appends a whole element.
pub fn put_element(out: &mut Vec<u8>, id: u32, body: &[u8]) {
    put_id(out, id);
    put_size(out, body.len() as u64);
    out.extend_from_slice(body);
}

pub fn put_uint(out: &mut Vec<u8>, id: u32, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(7);
    put_element(out, id, &bytes[skip..]);
}

pub fn put_float(out: &mut Vec<u8>, id: u32, v: f64) {
    put_element(out, id, &v.to_be_bytes());
}

pub fn put_str(out: &mut Vec<u8>, id: u32, s: &str) {
    put_element(out, id, s.as_bytes());
}

/// What a track carries.
#[derive(Debug, Clone, PartialEq)]
pub enum TrackCodec {
    /// H.264 with its `avcC` record.
    H264 { avcc: Vec<u8>, width: u32, height: u32 },
    /// Opus at 48 kHz.
    Opus { channels: u8, pre_skip: u16 },
}

/// One track of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackSpec {
    /// 1-based, as blocks name it.
    pub number: u8,
    pub name: String,
    pub codec: TrackCodec,
}

impl TrackSpec {
    fn entry(&self) -> Vec<u8> {
        let mut e = Vec::new();
        put_uint(&mut e, id::TRACK_NUMBER, u64::from(self.number));
        put_uint(&mut e, id::TRACK_UID, u64::from(self.number));
        put_uint(&mut e, id::FLAG_LACING, 0);
        put_str(&mut e, id::NAME, &self.name);
        put_str(&mut e, id::LANGUAGE, "und");
        match &self.codec {
            TrackCodec::H264 { avcc, width, height } => {
                put_uint(&mut e, id::TRACK_TYPE, 1);
                put_str(&mut e, id::CODEC_ID, "V_MPEG4/ISO/AVC");
                put_element(&mut e, id::CODEC_PRIVATE, avcc);
                let mut v = Vec::new();
                put_uint(&mut v, id::PIXEL_WIDTH, u64::from(*width));
                put_uint(&mut v, id::PIXEL_HEIGHT, u64::from(*height));
                put_element(&mut e, id::VIDEO, &v);
            }
            TrackCodec::Opus { channels, pre_skip } => {
                put_uint(&mut e, id::TRACK_TYPE, 2);
                put_str(&mut e, id::CODEC_ID, "A_OPUS");
                put_element(&mut e, id::CODEC_PRIVATE, &opus_head(*channels, *pre_skip));
                put_uint(&mut e, id::CODEC_DELAY, u64::from(*pre_skip) * 1_000_000_000 / 48_000);
                put_uint(&mut e, id::SEEK_PRE_ROLL, 80_000_000);
                let mut a = Vec::new();
                put_float(&mut a, id::SAMPLING_FREQUENCY, 48_000.0);
                put_uint(&mut a, id::CHANNELS, u64::from(*channels));
                put_element(&mut e, id::AUDIO, &a);
            }
        }
        e
    }
}

/// The Ogg Opus identification header (RFC 7845 §5.1), Matroska's Opus codec private data.
fn opus_head(channels: u8, pre_skip: u16) -> Vec<u8> {
    let mut h = b"OpusHead".to_vec();
    h.push(1);
    h.push(channels);
    h.extend_from_slice(&pre_skip.to_le_bytes());
    h.extend_from_slice(&48_000u32.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes());
    h.push(0);
    h
}

/// One frame in a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub track: u8,
    /// Milliseconds from the start of the recording.
    pub ts_ms: u64,
    pub keyframe: bool,
    pub data: Vec<u8>,
}

/// Where the writer has got to in the file, for the final patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the Segment's 8-byte size field.
    segment_size_at: u64,
    /// Offset of the first byte inside the Segment.
    segment_data_at: u64,
    /// Offset of the space reserved for the Duration.
    duration_at: u64,
}

/// The start of the file: EBML header, Segment (size unknown), Info, Tracks.
pub fn header(title: &str, start_unix_ms: u64, tracks: &[TrackSpec]) -> (Vec<u8>, Layout) {
    let mut out = Vec::new();
    let mut ebml = Vec::new();
    put_uint(&mut ebml, id::EBML_VERSION, 1);
    put_uint(&mut ebml, id::EBML_READ_VERSION, 1);
    put_uint(&mut ebml, id::EBML_MAX_ID_LENGTH, 4);
    put_uint(&mut ebml, id::EBML_MAX_SIZE_LENGTH, 8);
    put_str(&mut ebml, id::DOC_TYPE, "matroska");
    put_uint(&mut ebml, id::DOC_TYPE_VERSION, 4);
    put_uint(&mut ebml, id::DOC_TYPE_READ_VERSION, 2);
    put_element(&mut out, id::EBML, &ebml);

    put_id(&mut out, id::SEGMENT);
    let segment_size_at = out.len() as u64;
    out.extend_from_slice(&UNKNOWN_SIZE);
    let segment_data_at = out.len() as u64;

    let app = concat!("kioskd ", env!("CARGO_PKG_VERSION"));
    let mut info = Vec::new();
    put_uint(&mut info, id::TIMESTAMP_SCALE, TIMESTAMP_SCALE_NS);
    put_str(&mut info, id::MUXING_APP, app);
    put_str(&mut info, id::WRITING_APP, app);
    put_str(&mut info, id::TITLE, title);
    let date_ns = (start_unix_ms as i64 - MATROSKA_EPOCH_UNIX_S * 1000).saturating_mul(1_000_000);
    put_element(&mut info, id::DATE_UTC, &date_ns.to_be_bytes());
    let duration_in_info = info.len();
    // A Void of the Duration's size, overwritten when the recording finishes.
    put_id(&mut info, id::VOID);
    put_size(&mut info, (DURATION_BYTES - 2) as u64);
    info.extend_from_slice(&[0; DURATION_BYTES - 2]);
    put_id(&mut out, id::INFO);
    put_size(&mut out, info.len() as u64);
    let duration_at = (out.len() + duration_in_info) as u64;
    out.extend_from_slice(&info);

    let mut t = Vec::new();
    for track in tracks {
        put_element(&mut t, id::TRACK_ENTRY, &track.entry());
    }
    put_element(&mut out, id::TRACKS, &t);
    (out, Layout { segment_size_at, segment_data_at, duration_at })
}

/// A whole Cluster of `blocks` (sorted by time here). Its timestamp is the earliest block's, so
/// every block's relative timestamp is ≥ 0; the caller keeps a cluster under 32 s.
pub fn cluster(blocks: &mut [Block]) -> Vec<u8> {
    let mut out = Vec::new();
    cluster_into(blocks, &mut out);
    out
}

/// [`cluster`], appended to `out`: the sizes are worked out first, so that each block's bytes
/// are copied once.
pub fn cluster_into(blocks: &mut [Block], out: &mut Vec<u8>) {
    blocks.sort_by_key(|b| b.ts_ms);
    let base = blocks.first().map_or(0, |b| b.ts_ms);
    let block_header = |b: &Block| {
        let mut h = Vec::with_capacity(4);
        put_size(&mut h, u64::from(b.track));
        let rel = (b.ts_ms - base).min(i16::MAX as u64) as i16;
        h.extend_from_slice(&rel.to_be_bytes());
        h.push(if b.keyframe { 0x80 } else { 0 });
        h
    };
    let headers: Vec<Vec<u8>> = blocks.iter().map(block_header).collect();
    let mut timestamp = Vec::with_capacity(12);
    put_uint(&mut timestamp, id::TIMESTAMP, base);
    let mut scratch = Vec::with_capacity(16);
    let mut body_len = timestamp.len() as u64;
    for (b, header) in blocks.iter().zip(&headers) {
        let len = (header.len() + b.data.len()) as u64;
        scratch.clear();
        put_id(&mut scratch, id::SIMPLE_BLOCK);
        put_size(&mut scratch, len);
        body_len += scratch.len() as u64 + len;
    }
    out.reserve(body_len as usize + 12);
    put_id(out, id::CLUSTER);
    put_size(out, body_len);
    out.extend_from_slice(&timestamp);
    for (b, header) in blocks.iter().zip(&headers) {
        put_id(out, id::SIMPLE_BLOCK);
        put_size(out, (header.len() + b.data.len()) as u64);
        out.extend_from_slice(header);
        out.extend_from_slice(&b.data);
    }
}

impl Layout {
    /// The byte patches that finish a file of `file_len` bytes lasting `duration_ms`: the
    /// Segment's size and the Duration.
    pub fn finish(&self, file_len: u64, duration_ms: f64) -> Vec<(u64, Vec<u8>)> {
        let size = file_len.saturating_sub(self.segment_data_at);
        let mut seg = vec![0x01];
        seg.extend_from_slice(&size.to_be_bytes()[1..]);
        let mut dur = Vec::with_capacity(DURATION_BYTES);
        put_float(&mut dur, id::DURATION, duration_ms);
        debug_assert_eq!(dur.len(), DURATION_BYTES);
        vec![(self.segment_size_at, seg), (self.duration_at, dur)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_shortest_vints() {
        let enc = |v| {
            let mut o = Vec::new();
            put_size(&mut o, v);
            o
        };
        assert_eq!(enc(0), [0x80]);
        assert_eq!(enc(126), [0xFE]);
        assert_eq!(enc(127), [0x40, 0x7F], "0xFF alone would mean unknown");
        assert_eq!(enc(300), [0x41, 0x2C]);
        assert_eq!(enc(16_382), [0x7F, 0xFE]);
        assert_eq!(enc(16_383), [0x20, 0x3F, 0xFF]);
    }

    #[test]
    fn ids_keep_their_marker_bits() {
        let enc = |id| {
            let mut o = Vec::new();
            put_id(&mut o, id);
            o
        };
        assert_eq!(enc(id::SIMPLE_BLOCK), [0xA3]);
        assert_eq!(enc(id::DURATION), [0x44, 0x89]);
        assert_eq!(enc(id::LANGUAGE), [0x22, 0xB5, 0x9C]);
        assert_eq!(enc(id::SEGMENT), [0x18, 0x53, 0x80, 0x67]);
    }

    #[test]
    fn uints_are_big_endian_and_short() {
        let mut o = Vec::new();
        put_uint(&mut o, id::TRACK_NUMBER, 0);
        put_uint(&mut o, id::TIMESTAMP, 1000);
        assert_eq!(o, [0xD7, 0x81, 0x00, 0xE7, 0x82, 0x03, 0xE8]);
    }

    #[test]
    fn a_cluster_is_one_element_whose_size_covers_its_blocks() {
        for data_len in [0usize, 1, 100, 126, 127, 16_000, 70_000] {
            let mut blocks = vec![
                Block { track: 1, ts_ms: 5_000, keyframe: true, data: vec![7; data_len] },
                Block { track: 2, ts_ms: 5_020, keyframe: false, data: vec![8; 3] },
            ];
            let mut out = vec![0xAA]; // appended after what is there
            cluster_into(&mut blocks, &mut out);
            // Reference: the body built apart, then wrapped by put_element.
            let mut body = Vec::new();
            put_uint(&mut body, id::TIMESTAMP, 5_000);
            for (track, rel, flags, data) in [(1u8, 0i16, 0x80u8, vec![7; data_len]), (2, 20, 0, vec![8; 3])]
            {
                let mut block = vec![0x80 | track];
                block.extend_from_slice(&rel.to_be_bytes());
                block.push(flags);
                block.extend_from_slice(&data);
                put_element(&mut body, id::SIMPLE_BLOCK, &block);
            }
            let mut expected = vec![0xAA];
            put_element(&mut expected, id::CLUSTER, &body);
            assert_eq!(out, expected, "{data_len} bytes");
        }
    }

    #[test]
    fn a_cluster_is_timed_by_its_earliest_block() {
        let mut blocks = vec![
            Block { track: 1, ts_ms: 1040, keyframe: false, data: vec![1, 2] },
            Block { track: 2, ts_ms: 1000, keyframe: true, data: vec![3] },
        ];
        let c = cluster(&mut blocks);
        let expected = [
            0x1F, 0x43, 0xB6, 0x75, 0x93, // Cluster, 19 bytes
            0xE7, 0x82, 0x03, 0xE8, // Timestamp 1000
            0xA3, 0x85, 0x82, 0x00, 0x00, 0x80, 3, // track 2 at +0, keyframe
            0xA3, 0x86, 0x81, 0x00, 0x28, 0x00, 1, 2, // track 1 at +40
        ];
        assert_eq!(c, expected);
    }

    #[test]
    fn finishing_patches_the_segment_size_and_the_reserved_duration() {
        let tracks = [TrackSpec {
            number: 1,
            name: "mic".into(),
            codec: TrackCodec::Opus { channels: 1, pre_skip: 312 },
        }];
        let (mut file, layout) = header("call 1", 1_700_000_000_000, &tracks);
        let head_len = file.len();
        file.extend_from_slice(&cluster(&mut [Block {
            track: 1,
            ts_ms: 0,
            keyframe: true,
            data: vec![9; 10],
        }]));
        let reserved = layout.duration_at as usize;
        assert_eq!(file[reserved], 0xEC, "a Void holds the Duration's place");
        for (at, bytes) in layout.finish(file.len() as u64, 1234.0) {
            file[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
        }
        assert_eq!(&file[reserved..reserved + 3], [0x44, 0x89, 0x88]);
        assert_eq!(f64::from_be_bytes(file[reserved + 3..reserved + 11].try_into().expect("8")), 1234.0);
        let seg = layout.segment_size_at as usize;
        let size = u64::from_be_bytes(file[seg..seg + 8].try_into().expect("8")) & 0x00FF_FFFF_FFFF_FFFF;
        assert_eq!(size as usize, file.len() - layout.segment_data_at as usize);
        assert!(head_len < file.len());
    }

    #[test]
    fn opus_head_is_19_bytes() {
        let h = opus_head(1, 312);
        assert_eq!(h.len(), 19);
        assert_eq!(&h[..8], b"OpusHead");
        assert_eq!(&h[10..12], 312u16.to_le_bytes());
    }
}
