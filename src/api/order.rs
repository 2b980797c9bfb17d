//! The order collections sort in: each object's values for a request's
//! sort keys, how they compare, and [`OrderKey`], the same order owned, so
//! an index can keep objects sorted as they come and go.

use std::cmp::Ordering;
use std::sync::Arc;

use super::query::{Filter, Query, SortField, SortKey};
use super::store::{Attr, Entry};
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
fn rank(values: &[&str], v: &Attr) -> Option<usize> {
    let v = v.as_str()?;
    values.iter().position(|x| *x == v)
}

/// An order an index can keep for a type: its sort keys, and optionally
/// one enum attribute whose values part it, so a request that filters by one
/// value of that attribute walks only the objects that have it. Then oldest
/// first, then by id (the order ties fall back to).
#[derive(Debug)]
pub struct Order {
    pub ty: &'static ResourceType,
    pub keys: Box<[SortKey]>,
    /// The enum attribute (by position) whose values part the order.
    pub within: Option<usize>,
}

impl PartialEq for Order {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.ty, other.ty) && self.keys == other.keys && self.within == other.within
    }
}

impl Eq for Order {}

impl Order {
    /// The order that serves `query` from its first object: none when it
    /// sorts by nothing; parted by an enum attribute when its only filter is
    /// one value of that attribute (with that value).
    pub fn of<'q>(ty: &'static ResourceType, query: &'q Query) -> Option<(Order, Option<&'q str>)> {
        if query.sort.is_empty() {
            return None;
        }
        let part = match (&query.filters[..], &query.search) {
            ([Filter::Attribute(i, values)], None)
                if matches!(ty.attributes[*i].kind, AttrKind::Enum(_)) && values.len() == 1 =>
            {
                Some((*i, values[0].as_str()))
            }
            _ => None,
        };
        let order = Order {
            ty,
            keys: query.sort.as_slice().into(),
            within: part.map(|(i, _)| i),
        };
        Some((order, part.map(|(_, value)| value)))
    }

    /// Which part of the order `e` belongs to: its value's rank in the
    /// enum, after "unset" (0); always 0 when the order is not parted.
    pub fn part_of(&self, e: &Entry) -> usize {
        self.within
            .map_or(0, |i| self.part(e.attributes[i].as_str()))
    }

    /// The part of the objects whose attribute is `value`.
    pub fn part(&self, value: Option<&str>) -> usize {
        match (self.within, value) {
            (Some(i), Some(v)) => match self.ty.attributes[i].kind {
                AttrKind::Enum(values) => values.iter().position(|x| *x == v).map_or(0, |r| r + 1),
                _ => 0,
            },
            _ => 0,
        }
    }

    /// How many parts the order has.
    pub fn parts(&self) -> usize {
        match self.within.map(|i| self.ty.attributes[i].kind) {
            Some(AttrKind::Enum(values)) => values.len() + 1,
            _ => 1,
        }
    }

    fn cmp_entries(&self, a: &Entry, b: &Entry) -> Ordering {
        for key in &self.keys {
            let (x, y) = (
                sort_value(self.ty, key.field, a),
                sort_value(self.ty, key.field, b),
            );
            let order = compare(std::slice::from_ref(key), &[x], &[y]);
            if order != Ordering::Equal {
                return order;
            }
        }
        a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name))
    }
}

/// One object's place in a kept [`Order`]: the object itself, compared by
/// its values for the order's keys as [`compare`] does. Nothing is copied
/// out of the object, so keeping an order costs a pointer or two per object.
#[derive(Clone, Debug)]
pub struct OrderKey {
    order: Arc<Order>,
    pub entry: Arc<Entry>,
}

impl OrderKey {
    pub fn new(order: &Arc<Order>, entry: &Arc<Entry>) -> Self {
        OrderKey {
            order: order.clone(),
            entry: entry.clone(),
        }
    }
}

impl PartialEq for OrderKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for OrderKey {}

impl Ord for OrderKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order.cmp_entries(&self.entry, &other.entry)
    }
}

impl PartialOrd for OrderKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
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
