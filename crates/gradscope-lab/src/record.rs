//! A serde serializer that reads a flat record (a struct of numbers, names and options, possibly flattening
//! others) into named [`Cell`]s, so that a frame's columns come from the type that holds the data instead of
//! a list written again beside it. Unlike a round trip through JSON it keeps NaN and ±∞.

use std::fmt;

use serde::ser::{self, Impossible, Serialize};

use crate::output::Cell;

/// A value the record serializer does not take (a list, a nested record without `flatten`, bytes).
#[derive(Debug)]
pub struct Unsupported(String);

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsupported {}

impl ser::Error for Unsupported {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Unsupported(msg.to_string())
    }
}

fn unsupported<T>(what: &str) -> Result<T, Unsupported> {
    Err(Unsupported(format!("{what} is not a table cell")))
}

/// Serializes one record into `(field, cell)` pairs.
pub struct Fields<'a>(pub &'a mut Vec<(String, Cell)>);

/// Serializes one field's value into a [`Cell`].
struct Value;

macro_rules! cell_from {
    ($($f:ident: $t:ty => $e:expr),* $(,)?) => {
        $(fn $f(self, v: $t) -> Result<Cell, Unsupported> {
            #[allow(clippy::redundant_closure_call)]
            Ok(($e)(v))
        })*
    };
}

/// The methods both serializers refuse: compound values other than records, and bytes.
macro_rules! rejects {
    ($ok:ty) => {
        fn serialize_bytes(self, _v: &[u8]) -> Result<$ok, Unsupported> {
            unsupported("bytes")
        }
        fn serialize_newtype_variant<T: ?Sized + Serialize>(
            self,
            _name: &'static str,
            _index: u32,
            _variant: &'static str,
            _v: &T,
        ) -> Result<$ok, Unsupported> {
            unsupported("an enum variant with a value")
        }
        fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Unsupported> {
            unsupported("a list")
        }
        fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Unsupported> {
            unsupported("a tuple")
        }
        fn serialize_tuple_struct(
            self,
            _name: &'static str,
            _len: usize,
        ) -> Result<Self::SerializeTupleStruct, Unsupported> {
            unsupported("a tuple struct")
        }
        fn serialize_tuple_variant(
            self,
            _name: &'static str,
            _index: u32,
            _variant: &'static str,
            _len: usize,
        ) -> Result<Self::SerializeTupleVariant, Unsupported> {
            unsupported("a tuple variant")
        }
        fn serialize_struct_variant(
            self,
            _name: &'static str,
            _index: u32,
            _variant: &'static str,
            _len: usize,
        ) -> Result<Self::SerializeStructVariant, Unsupported> {
            unsupported("a struct variant")
        }
    };
}

impl ser::Serializer for Value {
    type Ok = Cell;
    type Error = Unsupported;
    type SerializeSeq = Impossible<Cell, Unsupported>;
    type SerializeTuple = Impossible<Cell, Unsupported>;
    type SerializeTupleStruct = Impossible<Cell, Unsupported>;
    type SerializeTupleVariant = Impossible<Cell, Unsupported>;
    type SerializeMap = Impossible<Cell, Unsupported>;
    type SerializeStruct = Impossible<Cell, Unsupported>;
    type SerializeStructVariant = Impossible<Cell, Unsupported>;

    cell_from! {
        serialize_bool: bool => |v: bool| Cell::Text(v.to_string()),
        serialize_i8: i8 => |v| Cell::Int(v as i64),
        serialize_i16: i16 => |v| Cell::Int(v as i64),
        serialize_i32: i32 => |v| Cell::Int(v as i64),
        serialize_i64: i64 => Cell::Int,
        serialize_u8: u8 => |v| Cell::Int(v as i64),
        serialize_u16: u16 => |v| Cell::Int(v as i64),
        serialize_u32: u32 => |v| Cell::Int(v as i64),
        serialize_u64: u64 => |v| Cell::Int(i64::try_from(v).unwrap_or(i64::MAX)),
        serialize_f32: f32 => |v| Cell::Num(v as f64),
        serialize_f64: f64 => Cell::Num,
        serialize_char: char => |v: char| Cell::Text(v.to_string()),
        serialize_str: &str => |v: &str| Cell::Text(v.to_string()),
    }

    fn serialize_none(self) -> Result<Cell, Unsupported> {
        Ok(Cell::None)
    }
    fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> Result<Cell, Unsupported> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<Cell, Unsupported> {
        Ok(Cell::None)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Cell, Unsupported> {
        Ok(Cell::None)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Cell, Unsupported> {
        Ok(Cell::Text(variant.into()))
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        v: &T,
    ) -> Result<Cell, Unsupported> {
        v.serialize(self)
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Unsupported> {
        unsupported("a map")
    }
    fn serialize_struct(
        self,
        name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Unsupported> {
        unsupported(&format!("a nested {name} (flatten it)"))
    }
    rejects!(Cell);
}

/// Methods for values a record cannot be.
macro_rules! reject {
    ($($f:ident: $t:ty),* $(,)?) => {
        $(fn $f(self, _v: $t) -> Result<(), Unsupported> {
            unsupported("a record that is a single value")
        })*
    };
}

impl<'a> ser::Serializer for Fields<'a> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Impossible<(), Unsupported>;
    type SerializeTuple = Impossible<(), Unsupported>;
    type SerializeTupleStruct = Impossible<(), Unsupported>;
    type SerializeTupleVariant = Impossible<(), Unsupported>;
    type SerializeMap = MapFields<'a>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), Unsupported>;

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self, Unsupported> {
        Ok(self)
    }
    // `#[serde(flatten)]` makes the outer record a map.
    fn serialize_map(self, _len: Option<usize>) -> Result<MapFields<'a>, Unsupported> {
        Ok(MapFields {
            fields: self.0,
            key: None,
        })
    }

    reject! {
        serialize_bool: bool,
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64,
        serialize_f32: f32,
        serialize_f64: f64,
        serialize_char: char,
        serialize_str: &str,
    }

    fn serialize_none(self) -> Result<(), Unsupported> {
        unsupported("a record that is None")
    }
    fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> Result<(), Unsupported> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Unsupported> {
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Unsupported> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
    ) -> Result<(), Unsupported> {
        unsupported("a record that is an enum")
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        v: &T,
    ) -> Result<(), Unsupported> {
        v.serialize(self)
    }
    rejects!(());
}

impl ser::SerializeStruct for Fields<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        self.0.push((key.to_string(), value.serialize(Value)?));
        Ok(())
    }
    fn skip_field(&mut self, _key: &'static str) -> Result<(), Unsupported> {
        Ok(())
    }
    fn end(self) -> Result<(), Unsupported> {
        Ok(())
    }
}

/// The fields of a record serialized as a map (what `#[serde(flatten)]` produces).
pub struct MapFields<'a> {
    fields: &'a mut Vec<(String, Cell)>,
    key: Option<String>,
}

impl ser::SerializeMap for MapFields<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Unsupported> {
        match key.serialize(Value)? {
            Cell::Text(k) => {
                self.key = Some(k);
                Ok(())
            }
            _ => unsupported("a map key that is not a name"),
        }
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Unsupported> {
        let key = self.key.take().unwrap_or_default();
        self.fields.push((key, value.serialize(Value)?));
        Ok(())
    }
    fn end(self) -> Result<(), Unsupported> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::output::{Cell, Frame};
    use serde::Serialize;

    #[derive(Serialize)]
    struct Run {
        name: &'static str,
        scale: Option<f64>,
    }

    #[derive(Serialize)]
    struct Row {
        #[serde(flatten)]
        run: Run,
        step: usize,
        value: f64,
    }

    #[test]
    fn records_become_columns_in_field_order_keeping_nan() {
        let rows = [
            Row {
                run: Run {
                    name: "a",
                    scale: None,
                },
                step: 1,
                value: f64::NAN,
            },
            Row {
                run: Run {
                    name: "b",
                    scale: Some(2.0),
                },
                step: 2,
                value: 0.5,
            },
        ];
        let f = Frame::from_records("t", "", &rows).unwrap();
        assert_eq!(f.columns, ["name", "scale", "step", "value"]);
        assert_eq!(
            f.rows[1],
            vec!["b".into(), Cell::Num(2.0), Cell::Int(2), Cell::Num(0.5)]
        );
        assert!(matches!(f.rows[0][3], Cell::Num(v) if v.is_nan()));
        assert_eq!(f.rows[0][1], Cell::None);
        #[derive(Serialize)]
        struct Nested {
            v: Vec<f64>,
        }
        assert!(Frame::from_records("n", "", &[Nested { v: vec![1.0] }]).is_err());
    }
}
