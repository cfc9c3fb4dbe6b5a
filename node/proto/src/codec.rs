//! Field-level encoding of frame bodies: little-endian integers, `u16`-length strings and
//! `u32`-length byte strings. The reader checks every length against the bytes left and a
//! named limit before it slices or allocates anything.

use bytes::{BufMut, Bytes};

use crate::error::ProtoError;
use crate::messages::Setting;

/// Appends fields to a frame body.
#[derive(Debug)]
pub struct Writer<'a, B: BufMut> {
    out: &'a mut B,
}

impl<'a, B: BufMut> Writer<'a, B> {
    pub fn new(out: &'a mut B) -> Self {
        Writer { out }
    }

    pub fn u8(&mut self, value: u8) {
        self.out.put_u8(value);
    }

    pub fn u16(&mut self, value: u16) {
        self.out.put_u16_le(value);
    }

    pub fn u32(&mut self, value: u32) {
        self.out.put_u32_le(value);
    }

    pub fn u64(&mut self, value: u64) {
        self.out.put_u64_le(value);
    }

    pub fn i64(&mut self, value: i64) {
        self.out.put_i64_le(value);
    }

    /// A string with a `u16` length. Callers keep strings within their limits (all far below
    /// `u16::MAX`); a longer one is a programmer error.
    pub fn str16(&mut self, value: &str) {
        let length = u16::try_from(value.len()).expect("string field longer than u16::MAX");
        self.u16(length);
        self.out.put_slice(value.as_bytes());
    }

    /// A topic setting: a tag (0 default, 1 unlimited, 2 value) and a `u64`.
    pub fn setting(&mut self, setting: Setting) {
        let (tag, value) = match setting {
            Setting::Default => (0, 0),
            Setting::Unlimited => (1, 0),
            Setting::Value(value) => (2, value),
        };
        self.u8(tag);
        self.u64(value);
    }

    /// Bytes with a `u32` length.
    /// Bytes as they are, without a length (a part of a field whose length was written).
    pub fn raw(&mut self, value: &[u8]) {
        self.out.put_slice(value);
    }

    pub fn bytes32(&mut self, value: &[u8]) {
        self.length32(value);
        self.out.put_slice(value);
    }

    /// The length prefix of a `bytes32` field whose bytes the caller sends after the frame's
    /// start (`Response::to_frame_parts`).
    pub fn length32(&mut self, value: &[u8]) {
        // Fields are bounded by the frame limits, far below u32::MAX.
        let length = u32::try_from(value.len()).expect("bytes field longer than u32::MAX");
        self.u32(length);
    }
}

/// Reads fields from a frame body without copying byte strings.
#[derive(Debug, Clone)]
pub struct Reader {
    bytes: Bytes,
    position: usize,
}

fn length_u64(length: usize) -> u64 {
    u64::try_from(length).unwrap_or(u64::MAX)
}

impl Reader {
    pub fn new(bytes: Bytes) -> Self {
        Reader { bytes, position: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn take(&mut self, length: usize, field: &'static str) -> Result<&[u8], ProtoError> {
        if length > self.remaining() {
            return Err(ProtoError::Truncated { field });
        }
        let start = self.position;
        self.position += length;
        Ok(&self.bytes[start..start + length])
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ProtoError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, ProtoError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, ProtoError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, ProtoError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub fn u64(&mut self, field: &'static str) -> Result<u64, ProtoError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    pub fn i64(&mut self, field: &'static str) -> Result<i64, ProtoError> {
        Ok(i64::from_le_bytes(self.array(field)?))
    }

    /// A topic setting; only the canonical encoding is accepted (no value with tags 0 and 1).
    pub fn setting(&mut self, field: &'static str) -> Result<Setting, ProtoError> {
        let tag = self.u8(field)?;
        let value = self.u64(field)?;
        match (tag, value) {
            (0, 0) => Ok(Setting::Default),
            (1, 0) => Ok(Setting::Unlimited),
            (2, value) => Ok(Setting::Value(value)),
            (0 | 1, value) => Err(ProtoError::Value { field, value }),
            (tag, _) => Err(ProtoError::Value {
                field,
                value: tag.into(),
            }),
        }
    }

    /// A `u16`-length UTF-8 string of at most `max` bytes, borrowed from the body.
    pub fn str16(&mut self, field: &'static str, max: u32) -> Result<&str, ProtoError> {
        let length = self.u16(field)?;
        if u32::from(length) > max {
            return Err(ProtoError::Length {
                field,
                length: length.into(),
                max: max.into(),
            });
        }
        let bytes = self.take(length.into(), field)?;
        core::str::from_utf8(bytes).map_err(|_| ProtoError::Utf8 { field })
    }

    /// A `u16`-length UTF-8 string of at most `max` bytes, copied.
    pub fn string16(&mut self, field: &'static str, max: u32) -> Result<String, ProtoError> {
        self.str16(field, max).map(str::to_owned)
    }

    /// A `u32`-length byte string of at most `max` bytes, sliced from the body without copying.
    pub fn bytes32(&mut self, field: &'static str, max: u32) -> Result<Bytes, ProtoError> {
        let length = self.u32(field)?;
        if length > max {
            return Err(ProtoError::Length {
                field,
                length: length.into(),
                max: max.into(),
            });
        }
        let length = length as usize;
        if length > self.remaining() {
            return Err(ProtoError::Truncated { field });
        }
        let start = self.position;
        self.position += length;
        Ok(self.bytes.slice(start..start + length))
    }

    /// A `u32` element count, at most `max` and at most what the remaining bytes can hold at
    /// `element_size_min` bytes each, so a lying count cannot make the caller over-allocate.
    pub fn count(
        &mut self,
        field: &'static str,
        max: u32,
        element_size_min: usize,
    ) -> Result<usize, ProtoError> {
        let count = self.u32(field)?;
        let fits = self.remaining() / element_size_min.max(1);
        if count > max || count as usize > fits {
            return Err(ProtoError::Length {
                field,
                length: count.into(),
                max: u64::from(max).min(length_u64(fits)),
            });
        }
        Ok(count as usize)
    }

    /// Succeeds only if every byte of the body was read.
    pub fn finish(self) -> Result<(), ProtoError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(ProtoError::TrailingBytes {
                count: length_u64(count),
            }),
        }
    }
}
