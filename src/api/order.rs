//! The order collections sort in: each object's values for a request's
//! sort keys, how they compare, and [`OrderKey`], the same order owned, so
//! an index can keep objects sorted as they come and go.

use std::cmp::{Ordering, Reverse};

use jiff::Timestamp;
use serde_json::Value;

use super::query::{SortField, SortKey};
use super::store::Entry;
use crate::crd::registry::{AttrKind, Field, ResourceType};

/// One object's value for one sort key, computed once per request rather
/// than at every comparison.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SortValue<'e> {
    Rank(usize),
    Text(Text<'e>),
    Time(jiff::Timestamp),
    Flag(bool),
    Unset,
}

pub fn sort_value<'e>(ty: &ResourceType, field: SortField, e: &'e Entry) -> SortValue<'e> {
    match field {
        SortField::Id => SortValue::Text(Text(&e.name)),
        SortField::Field(Field::CreatedAt) => SortValue::Time(e.created),
        SortField::Field(Field::UpdatedAt) => SortValue::Time(e.updated),
        SortField::Field(Field::Archived) => SortValue::Flag(e.archived),
        SortField::Field(Field::Attribute(i)) => {
            let value = &e.attributes[i];
            match (ty.attributes[i].kind, value.as_str()) {
                (_, None) => SortValue::Unset,
                (AttrKind::Enum(values), Some(_)) => {
                    rank(values, value).map_or(SortValue::Unset, SortValue::Rank)
                }
                (_, Some(text)) => SortValue::Text(Text(text)),
            }
        }
        SortField::Field(_) => SortValue::Unset,
    }
}

/// Text in the order people expect of a sorted list: letters regardless of
/// case first ("apple" < "Banana" < "cherry"), then by code point, so the
/// order stays total ("Apple" < "apple").
#[derive(Debug, PartialEq, Eq)]
pub struct Text<'e>(pub &'e str);

impl<'e> Ord for Text<'e> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Byte by byte while both are ASCII (names and titles usually are,
        // and sorting compares them thousands of times); from the first
        // other character on, which is a character boundary in both, by
        // folded characters.
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        let mut i = 0;
        let folded = loop {
            match (a.get(i), b.get(i)) {
                (Some(x), Some(y)) if x.is_ascii() && y.is_ascii() => {
                    match x.to_ascii_lowercase().cmp(&y.to_ascii_lowercase()) {
                        Ordering::Equal => i += 1,
                        unequal => break unequal,
                    }
                }
                (Some(_), Some(_)) => {
                    let fold = |s: &'e str| s.chars().flat_map(char::to_lowercase);
                    break fold(&self.0[i..]).cmp(fold(&other.0[i..]));
                }
                (x, y) => break x.is_some().cmp(&y.is_some()),
            }
        };
        folded.then_with(|| self.0.cmp(other.0))
    }
}

impl PartialOrd for Text<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

pub fn compare(keys: &[SortKey], a: &[SortValue<'_>], b: &[SortValue<'_>]) -> Ordering {
    for (key, (x, y)) in keys.iter().zip(a.iter().zip(b)) {
        let order = match (x, y) {
            // Unset values come last whichever the direction.
            (SortValue::Unset, SortValue::Unset) => continue,
            (SortValue::Unset, _) => return Ordering::Greater,
            (_, SortValue::Unset) => return Ordering::Less,
            _ if key.descending => y.cmp(x),
            _ => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

/// Enums sort in their declared order (low before critical).
fn rank(values: &[&str], v: &Value) -> Option<usize> {
    let v = v.as_str()?;
    values.iter().position(|x| *x == v)
}

/// One object's place in the order of a list of sort keys, owned: sorting
/// by it is sorting by [`compare`], then oldest first, then by id (the
/// order ties fall back to).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OrderKey {
    parts: Box<[Part]>,
    created: Timestamp,
    name: String,
}

/// One sort key's value. Within one list of keys a position is always
/// `Up` or always `Down` (or `Unset`), and `Unset` sorts last either way.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Up(Owned),
    Down(Reverse<Owned>),
    Unset,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Owned {
    Rank(usize),
    Text(TextBuf),
    Time(Timestamp),
    Flag(bool),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct TextBuf(String);

impl Ord for TextBuf {
    fn cmp(&self, other: &Self) -> Ordering {
        Text(&self.0).cmp(&Text(&other.0))
    }
}

impl PartialOrd for TextBuf {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl OrderKey {
    pub fn new(ty: &ResourceType, keys: &[SortKey], e: &Entry) -> Self {
        let parts = keys
            .iter()
            .map(|key| {
                let owned = match sort_value(ty, key.field, e) {
                    SortValue::Unset => return Part::Unset,
                    SortValue::Rank(r) => Owned::Rank(r),
                    SortValue::Text(t) => Owned::Text(TextBuf(t.0.to_owned())),
                    SortValue::Time(t) => Owned::Time(t),
                    SortValue::Flag(f) => Owned::Flag(f),
                };
                if key.descending {
                    Part::Down(Reverse(owned))
                } else {
                    Part::Up(owned)
                }
            })
            .collect();
        OrderKey {
            parts,
            created: e.created,
            name: e.name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_sorts_regardless_of_case_then_by_code_point() {
        let mut words = [
            "cherry", "Banana", "apple", "Apple", "Éclair", "eclair", "zed", "Zed",
        ];
        words.sort_by(|a, b| Text(a).cmp(&Text(b)));
        // Case folds, accents do not (that takes a collation table).
        assert_eq!(
            words,
            [
                "Apple", "apple", "Banana", "cherry", "eclair", "Zed", "zed", "Éclair"
            ]
        );
        // Past a shared ASCII prefix, with other characters, and prefixes.
        let order = |a: &str, b: &str| Text(a).cmp(&Text(b));
        assert_eq!(order("Straße", "STRASSE"), Ordering::Greater);
        assert_eq!(order("naïve", "NAÏVE"), Ordering::Greater);
        assert_eq!(order("NAÏVE", "naïve"), Ordering::Less);
        assert_eq!(order("Ärger", "ärger"), Ordering::Less);
        assert_eq!(order("ärger", "Ärgerlich"), Ordering::Less);
        assert_eq!(order("Req 10", "req 9"), Ordering::Less);
        assert_eq!(order("req", "Req 1"), Ordering::Less);
        assert_eq!(order("Même", "même"), Ordering::Less);
        assert_eq!(order("même", "même"), Ordering::Equal);
    }
}
