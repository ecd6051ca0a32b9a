//! The canonical binary encoding `verify` fingerprints: one byte string per meaning of a value.
//!
//! A serde serializer that writes every value as a tag byte and its raw content: strings and bytes
//! length-prefixed (no escaping), integers as their 128-bit value (so `u64` and `i64` of one number
//! agree, as their JSON text does), floats as their IEEE bits, sequences and maps between open and
//! close bytes. Every value is self-delimiting, so two different values cannot encode to the same
//! bytes. It is not human-readable: ids encode as their 16 bytes and [`Timestamp`]s as their
//! microseconds, which is what makes the same instant written in two time zones one encoding.
//!
//! It keeps the equalities of the JSON text it replaced (`null`, `None` and `()` are one value; a
//! unit variant is its name; a field skipped is absent), adds one (`-0.0` is `0.0`: JSONB stores
//! numbers as `numeric`, which has no negative zero) and never formats a number or escapes a
//! string, which made the JSON encoding about half of a verify's CPU. Map entries are encoded in the
//! order the value gives them: every free-form object in a record is a sorted map (serde_json
//! without `preserve_order`), so key order is canonical by construction.
//!
//! [`Timestamp`]: sprintlens_core::Timestamp

use serde::Serialize;
use serde::ser;

/// What can go wrong: only a type's own `Serialize` failing (no I/O happens).
#[derive(Debug)]
pub struct CanonError(String);

impl std::fmt::Display for CanonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CanonError {}

impl ser::Error for CanonError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        CanonError(msg.to_string())
    }
}

/// Appends the canonical encoding of `value` to `out`.
pub fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CanonError> {
    value.serialize(&mut Canon(out))
}

const NULL: u8 = b'n';
const FALSE: u8 = b'F';
const TRUE: u8 = b'T';
const INT: u8 = b'i';
const F32: u8 = b'f';
const F64: u8 = b'd';
const STR: u8 = b's';
const BYTES: u8 = b'b';
const SEQ: u8 = b'[';
const SEQ_END: u8 = b']';
const MAP: u8 = b'{';
const MAP_END: u8 = b'}';

struct Canon<'a>(&'a mut Vec<u8>);

impl Canon<'_> {
    fn int(&mut self, v: i128) {
        self.0.push(INT);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, tag: u8, v: &[u8]) {
        self.0.push(tag);
        self.0.extend_from_slice(&(v.len() as u64).to_le_bytes());
        self.0.extend_from_slice(v);
    }
}

type R = Result<(), CanonError>;

impl<'a, 'b> ser::Serializer for &'a mut Canon<'b> {
    type Ok = ();
    type Error = CanonError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn is_human_readable(&self) -> bool {
        false
    }
    fn serialize_bool(self, v: bool) -> R {
        self.0.push(if v { TRUE } else { FALSE });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> R {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> R {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> R {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> R {
        self.int(v.into());
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> R {
        self.int(v);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> R {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> R {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> R {
        self.serialize_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> R {
        self.int(v.into());
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> R {
        let v = i128::try_from(v).map_err(|_| CanonError("u128 above i128::MAX".into()))?;
        self.int(v);
        Ok(())
    }
    // `-0.0` is `0.0` (IEEE equal, and PostgreSQL's `numeric`, hence JSONB, has no negative zero).
    fn serialize_f32(self, v: f32) -> R {
        self.0.push(F32);
        self.0
            .extend_from_slice(&(if v == 0.0 { 0.0 } else { v }).to_bits().to_le_bytes());
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> R {
        self.0.push(F64);
        self.0
            .extend_from_slice(&(if v == 0.0 { 0.0 } else { v }).to_bits().to_le_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> R {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> R {
        self.bytes(STR, v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> R {
        self.bytes(BYTES, v);
        Ok(())
    }
    fn serialize_none(self) -> R {
        self.0.push(NULL);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_unit(self) -> R {
        self.serialize_none()
    }
    fn serialize_unit_struct(self, _: &'static str) -> R {
        self.serialize_none()
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> R {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> R {
        self.0.push(MAP);
        self.bytes(STR, variant.as_bytes());
        value.serialize(&mut *self)?;
        self.0.push(MAP_END);
        Ok(())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, CanonError> {
        self.0.push(SEQ);
        Ok(self)
    }
    fn serialize_tuple(self, len: usize) -> Result<Self, CanonError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Self, CanonError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self, CanonError> {
        self.0.push(MAP);
        self.bytes(STR, variant.as_bytes());
        self.0.push(SEQ);
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, CanonError> {
        self.0.push(MAP);
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, CanonError> {
        self.0.push(MAP);
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self, CanonError> {
        self.0.push(MAP);
        self.bytes(STR, variant.as_bytes());
        self.0.push(MAP);
        Ok(self)
    }
}

/// The compound serializers: elements (or fields, key first) in order, then the closing bytes.
macro_rules! compound {
    ($($trait:ident :: $method:ident ($($key:ident)?) => [$($end:expr),+];)*) => {$(
        impl ser::$trait for &mut Canon<'_> {
            type Ok = ();
            type Error = CanonError;
            fn $method<T: Serialize + ?Sized>(&mut self, $($key: &'static str,)? value: &T) -> R {
                $(self.bytes(STR, $key.as_bytes());)?
                value.serialize(&mut **self)
            }
            fn end(self) -> R {
                self.0.extend_from_slice(&[$($end),+]);
                Ok(())
            }
        }
    )*};
}

compound! {
    SerializeSeq::serialize_element() => [SEQ_END];
    SerializeTuple::serialize_element() => [SEQ_END];
    SerializeTupleStruct::serialize_field() => [SEQ_END];
    SerializeTupleVariant::serialize_field() => [SEQ_END, MAP_END];
    SerializeStruct::serialize_field(key) => [MAP_END];
    SerializeStructVariant::serialize_field(key) => [MAP_END, MAP_END];
}

impl ser::SerializeMap for &mut Canon<'_> {
    type Ok = ();
    type Error = CanonError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> R {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        self.0.push(MAP_END);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn enc<T: Serialize>(v: &T) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, &mut out).unwrap();
        out
    }

    fn json(text: &str) -> Vec<u8> {
        enc(&serde_json::from_str::<Value>(text).unwrap())
    }

    #[test]
    fn one_encoding_per_meaning() {
        // Equal in meaning: whitespace, escapes, float spelling, key order (a sorted map).
        assert_eq!(
            json(r#"{"a":"é","b":1.5}"#),
            json(r#"{ "b" : 1.50, "a" : "\u00e9" }"#)
        );
        assert_eq!(json("1e2"), json("100.0"));
        // What JSONB writes back for numbers serde_json wrote (no negative zero, no exponents).
        assert_eq!(json(r#"{"a":-0.0}"#), json(r#"{"a":0.0}"#));
        assert_eq!(enc(&-0.0f32), enc(&0.0f32));
        assert_eq!(json("1.5e-7"), json("0.00000015"));
        assert_eq!(json("1e300"), json(&format!("1{}", "0".repeat(300))));
        // Not equal: boundaries, nesting, types, NULL against empty, order of an array.
        assert_ne!(json(r#"["ab","c"]"#), json(r#"["a","bc"]"#));
        assert_ne!(json(r#"[["a"],"b"]"#), json(r#"[["a","b"]]"#));
        assert_ne!(json(r#"{"a":"b"}"#), json(r#"["a","b"]"#));
        assert_ne!(json(r#"{"a":{}}"#), json(r#"{"a":[]}"#));
        assert_ne!(json("1"), json("1.0"));
        assert_ne!(json(r#""1""#), json("1"));
        assert_ne!(json("null"), json(r#""""#));
        assert_ne!(json("[1,2]"), json("[2,1]"));
        assert_ne!(json("true"), json("false"));
        // One integer is one value whatever its Rust type.
        assert_eq!(enc(&5u64), enc(&5i64));
        assert_eq!(enc(&-5i32), enc(&-5i64));
        assert_ne!(enc(&1.0f32), enc(&1.0f64));
        assert_eq!(enc(&None::<u8>), enc(&()));
        assert_eq!(enc(&Some(3u8)), enc(&3u8));
    }

    #[test]
    fn enums_encode_like_their_json_shape() {
        #[derive(Serialize)]
        enum E {
            Unit,
            New(u8),
            Tuple(u8, u8),
            Struct { a: u8 },
        }
        assert_eq!(enc(&E::Unit), enc(&"Unit"));
        let map = |k: &str, v: Vec<u8>| {
            let mut out = vec![MAP];
            encode(k, &mut out).unwrap();
            out.extend(v);
            out.push(MAP_END);
            out
        };
        assert_eq!(enc(&E::New(1)), map("New", enc(&1u8)));
        assert_eq!(enc(&E::Tuple(1, 2)), map("Tuple", enc(&(1u8, 2u8))));
        #[derive(Serialize)]
        struct S {
            a: u8,
        }
        assert_eq!(enc(&E::Struct { a: 1 }), map("Struct", enc(&S { a: 1 })));
    }
}
