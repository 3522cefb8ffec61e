//! Page codecs: every stored page is compressed on its own, with the codec makedumpfile's
//! options name, and kept raw when compression would not make it smaller.
//!
//! | option | codec | kdump flag | engine |
//! |---|---|---|---|
//! | `-c` | zlib (RFC 1950), level 1 | 0x1 | zlib itself, through flate2 (`deflateReset` + `deflate`, as makedumpfile) |
//! | `-l` | LZO1X-1 | 0x2 | [`crate::format::lzo1x`] |
//! | `-p` | snappy (raw, no framing) | 0x4 | the `snap` crate |
//! | `-z`, none | one zstd frame, level 1 by default | 0x20 | libzstd |
//!
//! makedumpfile's rule (`write_kdump_pages_cyclic`) decides between the two forms: the
//! compressed form is kept only when it is shorter than the page; otherwise the page is stored
//! as it is, with flag 0 and size 4096. Each worker thread owns one [`PageCompressor`] (a zlib
//! stream, LZO's dictionary, a zstd context) and reuses it for every page, so the pipeline
//! allocates nothing per page, and since no state carries from one page to the next, the output
//! does not depend on which worker compressed which page.

use crate::format::bytes::to_usize;
use crate::format::kdump::{
    COMPRESSED_LZO, COMPRESSED_SNAPPY, COMPRESSED_ZLIB, COMPRESSED_ZSTD, compression_name,
};
use crate::format::lzo1x;
use crate::vmcore::PAGE_SIZE;

const PAGE: usize = to_usize(PAGE_SIZE);

/// How stored pages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Raw page bytes.
    None,
    /// zlib at its fastest level (makedumpfile `-c`, kdump flag 0x1).
    Zlib,
    /// LZO1X-1 (makedumpfile `-l`, kdump flag 0x2).
    Lzo,
    /// Raw snappy (makedumpfile `-p`, kdump flag 0x4).
    Snappy,
    /// One zstd frame per page at this level (makedumpfile `-z`, kdump flag 0x20).
    Zstd(i32),
}

impl Codec {
    /// The flag of the kdump header's `status` and of each page compressed with this codec;
    /// 0 for [`Codec::None`].
    pub const fn flag(self) -> u32 {
        match self {
            Self::None => 0,
            Self::Zlib => COMPRESSED_ZLIB,
            Self::Lzo => COMPRESSED_LZO,
            Self::Snappy => COMPRESSED_SNAPPY,
            Self::Zstd(_) => COMPRESSED_ZSTD,
        }
    }

    /// The codec's name, as `rkdump info` and the summary give it.
    pub fn name(self) -> &'static str {
        compression_name(self.flag())
    }
}

/// How one page is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Bytes appended to the chunk's data.
    pub size: u32,
    /// The page's kdump compression flag, or 0 when stored raw.
    pub flags: u32,
}

/// One worker's compression state, reused for every page it stores.
pub struct PageCompressor {
    engine: Engine,
    /// Output buffer for the engines that write into a slice.
    scratch: Vec<u8>,
}

enum Engine {
    None,
    Zlib(flate2::Compress),
    Lzo(lzo1x::Compressor),
    Snappy(Box<snap::raw::Encoder>),
    Zstd(zstd::bulk::Compressor<'static>),
}

impl std::fmt::Debug for PageCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.engine {
            Engine::None => "none",
            Engine::Zlib(_) => "zlib",
            Engine::Lzo(_) => "lzo",
            Engine::Snappy(_) => "snappy",
            Engine::Zstd(_) => "zstd",
        };
        f.debug_struct("PageCompressor")
            .field("engine", &name)
            .finish_non_exhaustive()
    }
}

impl PageCompressor {
    /// The state for `codec`; fails only when libzstd cannot make a context.
    pub fn new(codec: Codec) -> std::io::Result<Self> {
        let (engine, scratch) = match codec {
            Codec::None => (Engine::None, 0),
            // makedumpfile: deflateInit(Z_BEST_SPEED), a zlib header, zlib's default window
            // and memory level (flate2 passes 15 and 8, as deflateInit does).
            Codec::Zlib => (
                Engine::Zlib(flate2::Compress::new(flate2::Compression::fast(), true)),
                PAGE - 1,
            ),
            Codec::Lzo => (Engine::Lzo(lzo1x::Compressor::new()), 0),
            // snap refuses a destination shorter than the worst case.
            Codec::Snappy => (
                Engine::Snappy(Box::new(snap::raw::Encoder::new())),
                snap::raw::max_compress_len(PAGE),
            ),
            Codec::Zstd(level) => (Engine::Zstd(zstd::bulk::Compressor::new(level)?), PAGE - 1),
        };
        Ok(Self {
            engine,
            scratch: vec![0; scratch],
        })
    }

    /// Appends the stored form of `page` to `data`: compressed when that is shorter than the
    /// page, else the page itself.
    pub fn store(&mut self, page: &[u8], data: &mut Vec<u8>) -> Stored {
        let start = data.len();
        if let Some(flags) = self.compress(page, data) {
            let size = data.len() - start;
            if size < page.len() {
                return Stored {
                    size: u32::try_from(size).expect("shorter than a page"),
                    flags,
                };
            }
            data.truncate(start);
        }
        data.extend_from_slice(page);
        Stored {
            size: u32::try_from(page.len()).expect("a page is 4096 bytes"),
            flags: 0,
        }
    }

    /// Appends the compressed form of `page` to `data` and returns its flag, or returns `None`
    /// (with `data` unchanged) when there is no codec or its output would not be shorter.
    fn compress(&mut self, page: &[u8], data: &mut Vec<u8>) -> Option<u32> {
        // A destination one byte short of the page for the engines that stop when it is full:
        // output that would not shrink the page does not fit.
        let short = page.len().saturating_sub(1).min(self.scratch.len());
        match &mut self.engine {
            Engine::None => None,
            Engine::Zlib(stream) => {
                stream.reset();
                let status = stream
                    .compress(
                        page,
                        &mut self.scratch[..short],
                        flate2::FlushCompress::Finish,
                    )
                    .ok()?;
                // Anything but the stream's end means the destination filled up first.
                (status == flate2::Status::StreamEnd).then(|| {
                    let size = usize::try_from(stream.total_out()).expect("at most a page");
                    data.extend_from_slice(&self.scratch[..size]);
                    COMPRESSED_ZLIB
                })
            }
            Engine::Lzo(compressor) => {
                compressor.compress(page, data);
                Some(COMPRESSED_LZO)
            }
            Engine::Snappy(encoder) => {
                let size = encoder.compress(page, &mut self.scratch).ok()?;
                data.extend_from_slice(&self.scratch[..size]);
                Some(COMPRESSED_SNAPPY)
            }
            Engine::Zstd(compressor) => {
                let size = compressor
                    .compress_to_buffer(page, &mut self.scratch[..short])
                    .ok()?;
                data.extend_from_slice(&self.scratch[..size]);
                Some(COMPRESSED_ZSTD)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODECS: [Codec; 5] = [
        Codec::None,
        Codec::Zlib,
        Codec::Lzo,
        Codec::Snappy,
        Codec::Zstd(1),
    ];

    /// Decodes one stored page with an independent decoder for its flag.
    fn decode(stored: &[u8], flags: u32) -> Vec<u8> {
        match flags {
            0 => stored.to_vec(),
            COMPRESSED_ZLIB => {
                let mut out = Vec::with_capacity(PAGE);
                let mut inflate = flate2::Decompress::new(true);
                let status = inflate
                    .decompress_vec(stored, &mut out, flate2::FlushDecompress::Finish)
                    .unwrap();
                assert_eq!(status, flate2::Status::StreamEnd);
                out
            }
            COMPRESSED_LZO => lzo1x::tests::decode(stored).unwrap(),
            COMPRESSED_SNAPPY => snap::raw::Decoder::new().decompress_vec(stored).unwrap(),
            COMPRESSED_ZSTD => zstd::bulk::decompress(stored, PAGE).unwrap(),
            other => panic!("flag {other:#x}"),
        }
    }

    fn xorshift_page(mut state: u64) -> Vec<u8> {
        (0..PAGE)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect()
    }

    #[test]
    fn flags_and_names_are_makedumpfiles() {
        let flags: Vec<u32> = CODECS.iter().map(|c| c.flag()).collect();
        assert_eq!(flags, [0, 0x1, 0x2, 0x4, 0x20]);
        let names: Vec<&str> = CODECS.iter().map(|c| c.name()).collect();
        assert_eq!(names, ["none", "zlib", "lzo", "snappy", "zstd"]);
        assert_eq!(compression_name(COMPRESSED_ZSTD | 0x8), "zstd");
    }

    #[test]
    fn random_pages_are_stored_raw_by_every_codec() {
        let random = xorshift_page(0x1234_5678_9abc_def0);
        for codec in CODECS {
            let mut compressor = PageCompressor::new(codec).unwrap();
            let mut data = b"before".to_vec();
            let stored = compressor.store(&random, &mut data);
            assert_eq!(
                stored,
                Stored {
                    size: 4096,
                    flags: 0
                },
                "{codec:?}"
            );
            assert_eq!(&data[6..], random, "{codec:?}");
        }
    }

    #[test]
    fn compressible_pages_round_trip_through_each_codec_and_its_state_is_reused() {
        let text = b"kdump ".repeat(PAGE / 6 + 1)[..PAGE].to_vec();
        let mut mixed = xorshift_page(7);
        mixed[..3000].fill(0);
        for codec in CODECS.into_iter().skip(1) {
            let mut compressor = PageCompressor::new(codec).unwrap();
            // The same page twice, with another between: nothing carries over.
            let mut sizes = Vec::new();
            for page in [&text, &mixed, &text] {
                let mut data = Vec::new();
                let stored = compressor.store(page, &mut data);
                assert_eq!(stored.flags, codec.flag(), "{codec:?}");
                assert_eq!(data.len(), stored.size as usize);
                assert!(data.len() < PAGE);
                assert_eq!(&decode(&data, stored.flags), page, "{codec:?}");
                sizes.push(data);
            }
            assert_eq!(sizes[0], sizes[2], "{codec:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn every_page_decodes_to_itself(
            seed: u64,
            zeros in 0..=PAGE,
            period in 1usize..64,
        ) {
            let mut page = xorshift_page(seed | 1);
            page[..zeros].fill(0);
            for i in zeros..PAGE {
                if i % 64 >= period {
                    page[i] = page[i - period.min(i)];
                }
            }
            for codec in CODECS {
                let mut compressor = PageCompressor::new(codec).unwrap();
                let mut data = Vec::new();
                let stored = compressor.store(&page, &mut data);
                proptest::prop_assert_eq!(data.len(), stored.size as usize);
                proptest::prop_assert!(data.len() <= PAGE);
                proptest::prop_assert_eq!(decode(&data, stored.flags), page.clone());
            }
        }
    }
}
