//! What the JSON:API reads and writes, as the engine sees it: an object as
//! served ([`Entry`]), an organization's objects ([`Organization`]), the
//! in-memory index of every organization ([`Index`]) and the writes that go
//! to the API server ([`Writes`]). The index implements the first three
//! without I/O; `crate::writes` implements the last against Kubernetes. The
//! HTTP handlers are generic over both, so everything but the writes
//! themselves is tested in process against an in-memory index.

use std::future::Future;
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::error::Problem;
use super::order::Order;
use crate::crd::registry::{AttrKind, ResourceType};

/// Object names, held as compactly as a list of strings can be.
pub type Names = Box<[Box<str>]>;

/// One object as the API serves it. Every index entry is one of these, so
/// its fields are boxed slices and strings (no spare capacity) and
/// attribute values are [`Attr`]s, not JSON values.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub name: String,
    pub resource_version: Box<str>,
    pub created: Timestamp,
    pub updated: Timestamp,
    pub archived: bool,
    /// Aligned with the type's attributes.
    pub attributes: Box<[Attr]>,
    /// Related object names, aligned with the type's relationships.
    pub relationships: Box<[Names]>,
}

impl Entry {
    /// About how many bytes of content the object holds: its name, its
    /// attributes and the names it relates to. What quotas count.
    pub fn footprint(&self) -> usize {
        let names = |names: &[Box<str>]| names.iter().map(|n| n.len()).sum::<usize>();
        self.name.len()
            + self
                .attributes
                .iter()
                .map(|a| match a {
                    Attr::List(items) => names(items) + 1,
                    single => single.as_str().map_or(1, str::len),
                })
                .sum::<usize>()
            + self.relationships.iter().map(|r| names(r)).sum::<usize>()
    }
}

/// An attribute's value in an [`Entry`]: only what the registry's kinds
/// allow, in 24 bytes where a JSON value takes 32, and an enum's value
/// (a status, a priority) held once by the registry, not once per object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Attr {
    #[default]
    Unset,
    /// A string or a timestamp.
    Text(Box<str>),
    /// One of an enum attribute's values.
    Choice(&'static str),
    /// A list of strings.
    List(Names),
}

impl Attr {
    /// `value` as an attribute of `kind`; `None` when it is not of that
    /// kind (or not one of the enum's values).
    pub fn from_json(value: &Value, kind: AttrKind) -> Option<Self> {
        Some(match (value, kind) {
            (Value::Null, _) => Attr::Unset,
            (Value::String(s), AttrKind::Enum(allowed)) => {
                Attr::Choice(allowed.iter().find(|a| **a == s.as_str())?)
            }
            (Value::String(s), AttrKind::String | AttrKind::Time) => Attr::Text(s.as_str().into()),
            (Value::Array(items), AttrKind::List) => Attr::List(
                items
                    .iter()
                    .map(|i| i.as_str().map(Box::from))
                    .collect::<Option<_>>()?,
            ),
            _ => return None,
        })
    }

    /// The value of a string, timestamp or enum attribute.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Attr::Text(s) => Some(s),
            Attr::Choice(s) => Some(s),
            Attr::Unset | Attr::List(_) => None,
        }
    }

    /// The items of a list attribute (none for any other).
    pub fn items(&self) -> &[Box<str>] {
        match self {
            Attr::List(items) => items,
            _ => &[],
        }
    }
}

impl From<&str> for Attr {
    fn from(text: &str) -> Self {
        Attr::Text(text.into())
    }
}

impl PartialEq<&str> for Attr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

/// As JSON: unset is `null`.
impl Serialize for Attr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Attr::Unset => s.serialize_none(),
            Attr::Text(text) => s.serialize_str(text),
            Attr::Choice(text) => s.serialize_str(text),
            Attr::List(items) => items.serialize(s),
        }
    }
}

/// One organization's objects of every type, read without I/O.
pub trait Organization {
    fn get(&self, ty: &ResourceType, name: &str) -> Option<&Arc<Entry>>;

    /// Every object of `ty`, oldest first, then by name.
    fn all(&self, ty: &ResourceType) -> impl Iterator<Item = &Arc<Entry>>;

    /// How many objects of `ty` are archived (`true`) or live (`false`).
    fn count(&self, ty: &ResourceType, archived: bool) -> usize;

    /// The [`Entry::footprint`] of every object of `ty`, archived or not.
    fn bytes(&self, ty: &ResourceType) -> usize;

    /// Every object of `order.ty` in `order`, if that order is kept
    /// ([`Index::keep_sorted`]); of a parted order, only those whose
    /// attribute is `value`.
    fn sorted(
        &self,
        order: &Order,
        value: Option<&str>,
    ) -> Option<impl Iterator<Item = &Arc<Entry>>>;

    /// How many live objects of `ty` have enum attribute `attribute` set to
    /// `value`; `None` when the attribute is not an enum.
    fn live_with(&self, ty: &ResourceType, attribute: usize, value: &str) -> Option<usize>;

    /// Names of the live objects of `ty` whose relationship `rel` includes
    /// `target`, in name order.
    fn referring(&self, ty: &ResourceType, rel: usize, target: &str) -> impl Iterator<Item = &str>;

    /// How many live objects of `ty` have `target` in relationship `rel`.
    fn referring_count(&self, ty: &ResourceType, rel: usize, target: &str) -> usize;
}

/// Every organization's objects.
pub trait Index: Send + Sync + 'static {
    type Org: Organization;

    /// Runs `read` on the objects of organization `org` (none, for an
    /// organization the index has never seen).
    fn read<R>(&self, org: &str, read: impl FnOnce(&Self::Org) -> R) -> R;

    /// Takes an object the API server just returned for a write, so the
    /// writer reads its own write at once.
    fn remember(&self, ty: &ResourceType, org: &str, entry: Entry);

    /// Asks that organization `org` keep its objects in `order` from now
    /// on, as far as the index keeps orders at all.
    fn keep_sorted(&self, org: &str, order: Order);

    /// Whether every watch feeding the index has listed once: before that,
    /// an answer could leave out objects that exist.
    fn listed(&self) -> bool;
}

/// A change to the members of a to-many relationship.
#[derive(Clone, Copy, Debug)]
pub enum Edit<'a> {
    Add(&'a [String]),
    Remove(&'a [String]),
}

impl Edit<'_> {
    pub fn apply(self, members: &mut Vec<String>) {
        match self {
            Edit::Add(names) => {
                for name in names {
                    if !members.contains(name) {
                        members.push(name.clone());
                    }
                }
            }
            Edit::Remove(names) => members.retain(|m| !names.contains(m)),
        }
    }
}

/// The writes, each answering the object as the API server stored it.
pub trait Writes: Send + Sync + 'static {
    /// Creates an object of `ty` in `org` with a new id and `spec`.
    fn create(
        &self,
        ty: &'static ResourceType,
        org: &str,
        spec: Map<String, Value>,
    ) -> impl Future<Output = Result<Entry, Problem>> + Send;

    /// Merges `spec` into object `id`; with `precondition`, only at that
    /// resource version (412 otherwise).
    fn patch(
        &self,
        ty: &'static ResourceType,
        org: &str,
        id: &str,
        spec: Map<String, Value>,
        precondition: Option<String>,
    ) -> impl Future<Output = Result<Entry, Problem>> + Send;

    /// Adds names to, or removes them from, the to-many relationship `rel`
    /// of object `id`, read and written at one version.
    fn edit_members(
        &self,
        ty: &'static ResourceType,
        org: &str,
        id: &str,
        rel: usize,
        edit: Edit<'_>,
        precondition: Option<String>,
    ) -> impl Future<Output = Result<Entry, Problem>> + Send;

    /// Whether object `name` of `ty` exists in `org`, asking the API server
    /// (for an object created a moment ago that the index has not seen).
    fn exists(
        &self,
        ty: &'static ResourceType,
        org: &str,
        name: &str,
    ) -> impl Future<Output = Result<bool, Problem>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_add_once_and_remove_every_occurrence() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut members = names(&["a", "b"]);
        Edit::Add(&names(&["b", "c"])).apply(&mut members);
        assert_eq!(members, names(&["a", "b", "c"]));
        Edit::Remove(&names(&["a", "x"])).apply(&mut members);
        assert_eq!(members, names(&["b", "c"]));
    }
}
