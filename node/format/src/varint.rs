//! Zigzag varints as in Kafka's v2 records (LEB128 of the zigzag-encoded value).
//!
//! Decoding is strict: a varint must use the fewest bytes that hold its value, so that every
//! decoded record re-encodes to the same bytes (the format is canonical).

use crate::error::RecordError;

/// Longest encoding of a 32-bit varint.
pub const VARINT_SIZE_MAX: usize = 5;
/// Longest encoding of a 64-bit varint.
pub const VARLONG_SIZE_MAX: usize = 10;

fn zigzag64(value: i64) -> u64 {
    // Reinterpreting the bits is the zigzag encoding's definition.
    #[allow(clippy::cast_sign_loss)]
    let encoded = ((value << 1) ^ (value >> 63)) as u64;
    encoded
}

fn unzigzag64(encoded: u64) -> i64 {
    #[allow(clippy::cast_possible_wrap)]
    let value = ((encoded >> 1) as i64) ^ -((encoded & 1) as i64);
    value
}

/// Number of bytes `write_varlong(value)` appends.
pub fn varlong_size(value: i64) -> usize {
    let mut encoded = zigzag64(value);
    let mut size = 1;
    while encoded >= 0x80 {
        encoded >>= 7;
        size += 1;
    }
    size
}

/// Number of bytes `write_varint(value)` appends.
pub fn varint_size(value: i32) -> usize {
    varlong_size(i64::from(value))
}

/// Appends `value` as a zigzag varlong.
pub fn write_varlong(out: &mut Vec<u8>, value: i64) {
    let mut encoded = zigzag64(value);
    while encoded >= 0x80 {
        // Truncation keeps the low seven bits, which is the point.
        #[allow(clippy::cast_possible_truncation)]
        out.push((encoded as u8 & 0x7f) | 0x80);
        encoded >>= 7;
    }
    #[allow(clippy::cast_possible_truncation)]
    out.push(encoded as u8);
}

/// Appends `value` as a zigzag varint. A 32-bit value has the same encoding as a varlong.
pub fn write_varint(out: &mut Vec<u8>, value: i32) {
    write_varlong(out, i64::from(value));
}

/// A forward-only reader over a byte slice that never reads past its end.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, position: 0 }
    }

    /// All bytes of the cursor, including those already read.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn position(&self) -> usize {
        self.position
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    pub fn read_u8(&mut self) -> Result<u8, RecordError> {
        let byte = *self
            .bytes
            .get(self.position)
            .ok_or(RecordError::UnexpectedEnd)?;
        self.position += 1;
        Ok(byte)
    }

    pub fn read_slice(&mut self, len: usize) -> Result<&'a [u8], RecordError> {
        if len > self.remaining() {
            return Err(RecordError::UnexpectedEnd);
        }
        let slice = &self.bytes[self.position..self.position + len];
        self.position += len;
        Ok(slice)
    }

    fn read_unsigned(&mut self, size_max: usize, bits: u32) -> Result<u64, RecordError> {
        // Most varints of a record (attributes, small deltas, header counts) are one byte: a
        // byte without the continuation bit is the whole value, and always minimal.
        if let Some(&byte) = self.bytes.get(self.position) {
            if byte & 0x80 == 0 {
                self.position += 1;
                return Ok(u64::from(byte));
            }
        }
        let mut value: u64 = 0;
        for (index, shift) in (0..size_max).zip((0..bits).step_by(7)) {
            let byte = self.read_u8()?;
            let payload = u64::from(byte & 0x7f);
            // The last allowed byte may only carry the bits that remain of the value.
            if index == size_max - 1 && (payload >> (bits - shift)) != 0 {
                return Err(RecordError::VarintOverflow);
            }
            value |= payload << shift;
            if byte & 0x80 == 0 {
                if index > 0 && byte == 0 {
                    return Err(RecordError::VarintNotMinimal);
                }
                return Ok(value);
            }
        }
        Err(RecordError::VarintOverflow)
    }

    /// Reads a zigzag varint that must fit in 32 bits.
    pub fn read_varint(&mut self) -> Result<i32, RecordError> {
        let encoded = self.read_unsigned(VARINT_SIZE_MAX, 32)?;
        let value = unzigzag64(encoded);
        i32::try_from(value).map_err(|_| RecordError::VarintOverflow)
    }

    /// Reads a zigzag varlong.
    pub fn read_varlong(&mut self) -> Result<i64, RecordError> {
        let encoded = self.read_unsigned(VARLONG_SIZE_MAX, 64)?;
        Ok(unzigzag64(encoded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings_match_kafka() {
        // Values from Kafka's ByteUtilsTest.
        let cases: &[(i64, &[u8])] = &[
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (-65, &[0x81, 0x01]),
            (8191, &[0xfe, 0x7f]),
            (i64::from(i32::MAX), &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            (i64::from(i32::MIN), &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for &(value, bytes) in cases {
            let mut out = Vec::new();
            write_varlong(&mut out, value);
            assert_eq!(out, bytes, "encoding {value}");
            assert_eq!(varlong_size(value), bytes.len());
            assert_eq!(Cursor::new(bytes).read_varlong(), Ok(value));
        }
    }

    #[test]
    fn rejects_overlong_and_overflowing_varints() {
        assert_eq!(
            Cursor::new(&[0x80, 0x00]).read_varint(),
            Err(RecordError::VarintNotMinimal)
        );
        assert_eq!(
            Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0x1f]).read_varint(),
            Err(RecordError::VarintOverflow)
        );
        assert_eq!(
            Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).read_varint(),
            Err(RecordError::VarintOverflow)
        );
        assert_eq!(
            Cursor::new(&[0x80]).read_varint(),
            Err(RecordError::UnexpectedEnd)
        );
        let eleven = [0xffu8; 11];
        assert_eq!(
            Cursor::new(&eleven).read_varlong(),
            Err(RecordError::VarintOverflow)
        );
        assert_eq!(
            Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .read_varlong(),
            Err(RecordError::VarintOverflow)
        );
    }

    proptest! {
        #[test]
        fn varlong_round_trips(value in any::<i64>()) {
            let mut out = Vec::new();
            write_varlong(&mut out, value);
            prop_assert_eq!(out.len(), varlong_size(value));
            let mut cursor = Cursor::new(&out);
            prop_assert_eq!(cursor.read_varlong(), Ok(value));
            prop_assert_eq!(cursor.remaining(), 0);
        }

        #[test]
        fn varint_round_trips(value in any::<i32>()) {
            let mut out = Vec::new();
            write_varint(&mut out, value);
            prop_assert_eq!(out.len(), varint_size(value));
            prop_assert_eq!(Cursor::new(&out).read_varint(), Ok(value));
        }

        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let _ = Cursor::new(&bytes).read_varint();
            let _ = Cursor::new(&bytes).read_varlong();
        }
    }
}
