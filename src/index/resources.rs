//! The business resources every replica serves, per organization
//! (namespace) and type, with a reverse index of every relationship so
//! inverse relationships and relationship filters need no scan, live counts
//! per enum value so filtered totals need no count, and the sort orders
//! clients ask for kept as objects change so a sorted page is a walk of
//! the page. Fed by
//! watches and by the API's own writes; read by the JSON:API without I/O,
//! through [`api::store::Index`](crate::api::store::Index).
//!
//! Readers never hold a lock while they work: each organization is an
//! `Arc` of persistent maps, which a reader clones under a moment's read
//! lock and a writer updates copy-on-write, sharing all but the changed
//! path with the snapshots readers still hold.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use imbl::OrdSet;

use jiff::Timestamp;
use kube::api::DynamicObject;
use serde_json::Value;

use crate::api::order::{Order, OrderKey};
pub use crate::api::store::Entry;
use crate::api::store::{Attr, Index, Names, Organization};
use crate::crd::registry::{AttrKind, ResourceType, TYPES};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("object has no name or namespace")]
    Unnamed,
    #[error("spec.{0} does not have the declared type")]
    Field(&'static str),
}

impl Entry {
    /// The entry for a custom resource of type `ty`, and its namespace.
    pub fn from_object(
        ty: &ResourceType,
        obj: &DynamicObject,
    ) -> Result<(String, Entry), EntryError> {
        let meta = &obj.metadata;
        let (Some(name), Some(namespace)) = (&meta.name, &meta.namespace) else {
            return Err(EntryError::Unnamed);
        };
        let empty = serde_json::Map::new();
        let spec = obj
            .data
            .get("spec")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let attributes = ty
            .attributes
            .iter()
            .map(|a| {
                Attr::from_json(spec.get(a.field).unwrap_or(&Value::Null), a.kind)
                    .ok_or(EntryError::Field(a.field))
            })
            .collect::<Result<_, _>>()?;
        let mut relationships = Vec::with_capacity(ty.relationships.len());
        for r in ty.relationships {
            let names: Names = match spec.get(r.field) {
                None | Some(Value::Null) => Box::default(),
                Some(Value::String(s)) if !r.many => Box::new([s.as_str().into()]),
                Some(Value::Array(items)) if r.many => items
                    .iter()
                    .map(|i| i.as_str().map(Box::from))
                    .collect::<Option<_>>()
                    .ok_or(EntryError::Field(r.field))?,
                Some(_) => return Err(EntryError::Field(r.field)),
            };
            relationships.push(names);
        }
        let archived = match spec.get("archived") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(EntryError::Field("archived")),
        };
        let created = meta
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or_default();
        // The newest write by any field manager.
        let updated = meta
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|m| m.time.as_ref().map(|t| t.0))
            .fold(created, Timestamp::max);
        let entry = Entry {
            name: name.clone(),
            resource_version: meta.resource_version.as_deref().unwrap_or_default().into(),
            created,
            updated,
            archived,
            attributes,
            relationships: relationships.into(),
        };
        Ok((namespace.clone(), entry))
    }

    /// Whether `self` is older than `other` by resource version. Resource
    /// versions are opaque, but etcd's are increasing integers; when either
    /// is not, the newcomer wins.
    fn older_than(&self, other: &Entry) -> bool {
        match (
            self.resource_version.parse::<u64>(),
            other.resource_version.parse::<u64>(),
        ) {
            (Ok(a), Ok(b)) => a < b,
            _ => false,
        }
    }
}

/// One type's objects in one organization.
#[derive(Clone, Default, Debug)]
pub struct Table {
    /// Every object, found by name. Sets of the entries themselves, not
    /// maps from a copy of a key: an object's name is held once.
    by_name: OrdSet<ByName>,
    /// Default order: oldest first, then by name.
    order: OrdSet<ByAge>,
    /// Per relationship of this type: related name -> names of the live
    /// (not archived) objects here that point at it. Inverse relationships
    /// are read from here, and leave archived objects out as collections do.
    refs: Vec<imbl::HashMap<Box<str>, OrdSet<Box<str>>>>,
    archived: usize,
    /// The footprint of every object here.
    bytes: usize,
    /// Per enum attribute (by position): live objects per value, so a
    /// filtered collection's total needs no count.
    enums: Vec<imbl::HashMap<String, usize>>,
    /// Orders collections were asked for, each kept up to date as objects
    /// come and go (at most [`SORTED_ORDERS`]), so a sorted page is a walk
    /// of the page, not a sort of the collection.
    sorted: Vec<Kept>,
}

/// An entry in a set by name, which it can be looked up by.
#[derive(Clone, Debug)]
struct ByName(Arc<Entry>);

impl std::borrow::Borrow<str> for ByName {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for ByName {}

impl Ord for ByName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.name.cmp(&other.0.name)
    }
}

impl PartialOrd for ByName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// An entry in a set oldest first, then by name.
#[derive(Clone, Debug)]
struct ByAge(Arc<Entry>);

impl ByAge {
    fn key(&self) -> (Timestamp, &str) {
        (self.0.created, &self.0.name)
    }
}

impl PartialEq for ByAge {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ByAge {}

impl Ord for ByAge {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for ByAge {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Objects in one kept order, in its parts (one, unless it is parted).
#[derive(Clone, Debug)]
struct Kept {
    order: Arc<Order>,
    parts: Vec<OrdSet<OrderKey>>,
}

impl Kept {
    fn insert(&mut self, entry: &Arc<Entry>) {
        let part = self.order.part_of(entry);
        self.parts[part].insert(OrderKey::new(&self.order, entry));
    }

    fn remove(&mut self, entry: &Arc<Entry>) {
        let part = self.order.part_of(entry);
        self.parts[part].remove(&OrderKey::new(&self.order, entry));
    }
}

/// An object's enum attributes that are set: position and value.
fn enum_values<'e>(ty: &ResourceType, e: &'e Entry) -> impl Iterator<Item = (usize, &'e str)> {
    ty.attributes
        .iter()
        .zip(e.attributes.iter())
        .enumerate()
        .filter(|(_, (a, _))| matches!(a.kind, AttrKind::Enum(_)))
        .filter_map(|(i, (_, v))| Some((i, v.as_str()?)))
}

/// Sort orders kept per table: what one organization's type costs in
/// memory stays bounded whatever orders clients ask for; others sort per
/// request.
pub const SORTED_ORDERS: usize = 4;

impl Table {
    pub fn get(&self, name: &str) -> Option<&Arc<Entry>> {
        self.by_name.get(name).map(|e| &e.0)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// How many objects are archived (`true`) or live (`false`).
    pub fn count(&self, archived: bool) -> usize {
        if archived {
            self.archived
        } else {
            self.by_name.len() - self.archived
        }
    }

    /// Every object, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Entry>> {
        self.order.iter().map(|e| &e.0)
    }

    /// Every object in `order` (those whose attribute is `value`, if the
    /// order is parted), if that order is kept.
    pub fn sorted(
        &self,
        order: &Order,
        value: Option<&str>,
    ) -> Option<impl Iterator<Item = &Arc<Entry>>> {
        let kept = self.sorted.iter().find(|k| *k.order == *order)?;
        let part = kept.parts.get(order.part(value))?;
        Some(part.iter().map(|key| &key.entry))
    }

    /// Whether `order` is kept, or cannot be (the table keeps as many as
    /// it may): nothing to build.
    fn settled(&self, order: &Order) -> bool {
        self.sorted.len() >= SORTED_ORDERS || self.sorted.iter().any(|k| *k.order == *order)
    }

    /// Starts keeping `order`, unless it is kept already or the table keeps
    /// as many as it may.
    fn keep_sorted(&mut self, order: Order) {
        let sorted = self.sort(order);
        self.keep(sorted);
    }

    /// Every object here in `order`.
    fn sort(&self, order: Order) -> Kept {
        let mut kept = Kept {
            parts: vec![OrdSet::new(); order.parts()],
            order: Arc::new(order),
        };
        for ByAge(e) in &self.order {
            kept.insert(e);
        }
        kept
    }

    /// Keeps `sorted`, unless its order is kept already or the table keeps
    /// as many as it may.
    fn keep(&mut self, sorted: Kept) {
        if !self.settled(&sorted.order) {
            self.sorted.push(sorted);
        }
    }

    /// Names of the live objects whose relationship `rel` includes
    /// `target`, in name order.
    pub fn referring(&self, rel: usize, target: &str) -> impl Iterator<Item = &str> {
        self.refs
            .get(rel)
            .and_then(|m| m.get(target))
            .into_iter()
            .flatten()
            .map(|n| &**n)
    }

    /// How many live objects' relationship `rel` includes `target`.
    pub fn referring_count(&self, rel: usize, target: &str) -> usize {
        self.refs
            .get(rel)
            .and_then(|m| m.get(target))
            .map_or(0, OrdSet::len)
    }

    fn insert(&mut self, ty: &ResourceType, entry: Arc<Entry>) {
        if let Some(ByName(old)) = self.by_name.get(entry.name.as_str())
            && (entry.older_than(old) || **old == *entry)
        {
            return;
        }
        self.remove(ty, &entry.name.clone());
        let live = if entry.archived {
            &[][..]
        } else {
            &entry.relationships[..]
        };
        for (i, names) in live.iter().enumerate() {
            if self.refs.len() <= i {
                self.refs.resize_with(i + 1, imbl::HashMap::new);
            }
            for target in names {
                self.refs[i]
                    .entry(target.clone())
                    .or_default()
                    .insert(entry.name.as_str().into());
            }
        }
        self.archived += usize::from(entry.archived);
        self.bytes += entry.footprint();
        if !entry.archived {
            for (i, value) in enum_values(ty, &entry) {
                if self.enums.len() <= i {
                    self.enums.resize_with(i + 1, imbl::HashMap::new);
                }
                *self.enums[i].entry(value.to_owned()).or_default() += 1;
            }
        }
        for kept in &mut self.sorted {
            kept.insert(&entry);
        }
        self.order.insert(ByAge(entry.clone()));
        self.by_name.insert(ByName(entry));
    }

    fn remove(&mut self, ty: &ResourceType, name: &str) {
        let Some(ByName(old)) = self.by_name.remove(name) else {
            return;
        };
        for kept in &mut self.sorted {
            kept.remove(&old);
        }
        if !old.archived {
            for (i, value) in enum_values(ty, &old) {
                if let Some(n) = self.enums[i].get_mut(value) {
                    *n -= 1;
                    if *n == 0 {
                        self.enums[i].remove(value);
                    }
                }
            }
        }
        self.archived -= usize::from(old.archived);
        self.bytes -= old.footprint();
        self.order.remove(&ByAge(old.clone()));
        for (i, names) in old.relationships.iter().enumerate() {
            for target in names {
                if let Some(sources) = self.refs[i].get_mut(&**target) {
                    sources.remove(name);
                    if sources.is_empty() {
                        self.refs[i].remove(&**target);
                    }
                }
            }
        }
    }
}

/// One organization's objects of every type.
#[derive(Clone, Debug)]
pub struct Org {
    tables: Vec<Table>,
}

impl Organization for Org {
    fn get(&self, ty: &ResourceType, name: &str) -> Option<&Arc<Entry>> {
        self.table(ty).get(name)
    }

    fn all(&self, ty: &ResourceType) -> impl Iterator<Item = &Arc<Entry>> {
        self.table(ty).iter()
    }

    fn count(&self, ty: &ResourceType, archived: bool) -> usize {
        self.table(ty).count(archived)
    }

    fn bytes(&self, ty: &ResourceType) -> usize {
        self.table(ty).bytes
    }

    fn sorted(
        &self,
        order: &Order,
        value: Option<&str>,
    ) -> Option<impl Iterator<Item = &Arc<Entry>>> {
        self.table(order.ty).sorted(order, value)
    }

    fn live_with(&self, ty: &ResourceType, attribute: usize, value: &str) -> Option<usize> {
        if !matches!(ty.attributes.get(attribute)?.kind, AttrKind::Enum(_)) {
            return None;
        }
        let counts = self.table(ty).enums.get(attribute);
        Some(counts.and_then(|c| c.get(value)).copied().unwrap_or(0))
    }

    fn referring(&self, ty: &ResourceType, rel: usize, target: &str) -> impl Iterator<Item = &str> {
        self.table(ty).referring(rel, target)
    }

    fn referring_count(&self, ty: &ResourceType, rel: usize, target: &str) -> usize {
        self.table(ty).referring_count(rel, target)
    }
}

impl Default for Org {
    fn default() -> Self {
        Org {
            tables: TYPES.iter().map(|_| Table::default()).collect(),
        }
    }
}

impl Org {
    pub fn table(&self, ty: &ResourceType) -> &Table {
        &self.tables[ty.index()]
    }

    /// Adds or replaces an object, unless the one held is newer.
    pub fn upsert(&mut self, ty: &ResourceType, entry: Entry) {
        self.tables[ty.index()].insert(ty, Arc::new(entry));
    }

    pub fn remove(&mut self, ty: &ResourceType, name: &str) {
        self.tables[ty.index()].remove(ty, name);
    }

    /// Keeps objects in `order` from now on (see [`Index::keep_sorted`]).
    pub fn keep_sorted(&mut self, order: Order) {
        self.tables[order.ty.index()].keep_sorted(order);
    }

    fn is_empty(&self) -> bool {
        self.tables.iter().all(Table::is_empty)
    }
}

/// Every organization's objects.
pub struct ResourceStore {
    /// Each organization as its latest snapshot.
    orgs: RwLock<HashMap<String, Arc<Org>>>,
    watches: usize,
    /// The watches that have listed once.
    synced: Mutex<BTreeSet<usize>>,
    /// Set once every watch has listed, and never cleared: every JSON:API
    /// request asks, and should not take the lock to know.
    all_listed: AtomicBool,
}

static EMPTY: std::sync::LazyLock<Arc<Org>> = std::sync::LazyLock::new(Arc::default);

impl Index for ResourceStore {
    type Org = Org;

    fn read<R>(&self, org: &str, read: impl FnOnce(&Org) -> R) -> R {
        read(&self.snapshot(org))
    }

    fn remember(&self, ty: &ResourceType, org: &str, entry: Entry) {
        self.upsert(ty, org, entry);
    }

    fn listed(&self) -> bool {
        self.is_synced()
    }

    fn keep_sorted(&self, org: &str, order: Order) {
        let snapshot = self.snapshot(org);
        let ty = order.ty;
        let table = snapshot.table(ty);
        if table.settled(&order) {
            return;
        }
        // Sorted from the snapshot, outside the lock: readers and writers
        // never wait for it. Kept only if the table has not changed
        // meanwhile; otherwise a later request sorts again.
        let sorted = table.sort(order);
        let mut orgs = self.orgs.write().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = orgs.get_mut(org)
            && held.table(ty).order.ptr_eq(&table.order)
        {
            Arc::make_mut(held).tables[ty.index()].keep(sorted);
        }
    }
}

impl ResourceStore {
    /// A store fed by `watches` watches, synced once each has listed.
    pub fn new(watches: usize) -> Arc<Self> {
        Arc::new(ResourceStore {
            orgs: RwLock::default(),
            watches,
            synced: Mutex::default(),
            all_listed: AtomicBool::new(watches == 0),
        })
    }

    /// Organization `org` as it is now; later writes do not change it.
    pub fn snapshot(&self, org: &str) -> Arc<Org> {
        let orgs = self.orgs.read().unwrap_or_else(|e| e.into_inner());
        orgs.get(org).unwrap_or(&EMPTY).clone()
    }

    pub fn upsert(&self, ty: &ResourceType, namespace: &str, entry: Entry) {
        let mut orgs = self.orgs.write().unwrap_or_else(|e| e.into_inner());
        let org = orgs.entry(namespace.to_owned()).or_default();
        Arc::make_mut(org).upsert(ty, entry);
    }

    pub fn remove(&self, ty: &ResourceType, namespace: &str, name: &str) {
        let mut orgs = self.orgs.write().unwrap_or_else(|e| e.into_inner());
        if let Some(org) = orgs.get_mut(namespace) {
            Arc::make_mut(org).remove(ty, name);
            if org.is_empty() {
                orgs.remove(namespace);
            }
        }
    }

    /// Replaces every object of `ty` in `scope` (one namespace, or all for
    /// `None`) with a fresh listing, and marks watch `watch` synced.
    pub fn replace(
        &self,
        watch: usize,
        ty: &ResourceType,
        scope: Option<&str>,
        listing: impl IntoIterator<Item = (String, Entry)>,
    ) {
        // The new tables are built before the lock is taken.
        let mut tables: HashMap<String, Table> = HashMap::new();
        for (namespace, entry) in listing {
            tables
                .entry(namespace)
                .or_default()
                .insert(ty, Arc::new(entry));
        }
        let mut orgs = self.orgs.write().unwrap_or_else(|e| e.into_inner());
        for (namespace, org) in orgs.iter_mut() {
            if scope.is_none_or(|s| s == namespace) {
                let table = tables.remove(namespace).unwrap_or_default();
                Arc::make_mut(org).tables[ty.index()] = table;
            }
        }
        for (namespace, table) in tables {
            if scope.is_some_and(|s| s != namespace) {
                continue;
            }
            Arc::make_mut(orgs.entry(namespace).or_default()).tables[ty.index()] = table;
        }
        orgs.retain(|_, org| !org.is_empty());
        drop(orgs);
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        synced.insert(watch);
        if synced.len() >= self.watches {
            self.all_listed.store(true, Ordering::Release);
        }
    }

    /// Whether every watch has listed once.
    pub fn is_synced(&self) -> bool {
        self.all_listed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::registry::by_name;

    fn object(kind: &str, ns: &str, name: &str, rv: u64, spec: Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "catalio.ai/v1",
            "kind": kind,
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": format!("uid-{name}"),
                "resourceVersion": rv.to_string(),
                "creationTimestamp": "2026-11-30T10:00:00Z",
                "managedFields": [
                    {"manager": "a", "operation": "Update", "time": "2026-11-30T10:05:00Z"},
                    {"manager": "b", "operation": "Update", "time": "2026-11-30T10:01:00Z"}
                ]
            },
            "spec": spec
        }))
        .unwrap()
    }

    fn entry(kind: &str, name: &str, rv: u64, spec: Value) -> Entry {
        let ty = crate::crd::registry::TYPES
            .iter()
            .find(|t| t.kind == kind)
            .unwrap();
        Entry::from_object(ty, &object(kind, "org-a", name, rv, spec))
            .unwrap()
            .1
    }

    #[test]
    fn entries_read_the_spec_by_the_registry() {
        let e = entry(
            "Requirement",
            "r1",
            7,
            serde_json::json!({"title": "Export CSV", "asA": "Analyst", "priority": "high",
                "components": ["c1", "c2"], "persona": "p1", "archived": true}),
        );
        assert_eq!(e.attributes[0], "Export CSV");
        assert_eq!(e.attributes[2], "Analyst");
        assert_eq!(e.attributes[1], Attr::Unset);
        assert_eq!(e.attributes[6], Attr::Choice("high"));
        assert_eq!(&*e.relationships[0], [Box::from("p1")]);
        assert_eq!(&*e.relationships[2], [Box::from("c1"), Box::from("c2")]);
        assert!(e.archived);
        assert_eq!(e.updated.to_string(), "2026-11-30T10:05:00Z");
        assert_eq!(e.created.to_string(), "2026-11-30T10:00:00Z");
    }

    #[test]
    fn objects_that_do_not_fit_the_registry_are_refused() {
        let ty = by_name("requirement").unwrap();
        let bad = object(
            "Requirement",
            "o",
            "r",
            1,
            serde_json::json!({"title": "t", "priority": "urgent"}),
        );
        assert_eq!(
            Entry::from_object(ty, &bad),
            Err(EntryError::Field("priority"))
        );
        let bad = object(
            "Requirement",
            "o",
            "r",
            1,
            serde_json::json!({"title": "t", "components": "c1"}),
        );
        assert_eq!(
            Entry::from_object(ty, &bad),
            Err(EntryError::Field("components"))
        );
    }

    #[test]
    fn reverse_index_follows_changes_and_older_versions_lose() {
        let req = by_name("requirement").unwrap();
        let mut org = Org::default();
        let spec = |p: &str| serde_json::json!({"title": "t", "persona": p});
        org.upsert(req, entry("Requirement", "r1", 5, spec("p1")));
        org.upsert(req, entry("Requirement", "r2", 6, spec("p1")));
        let referring = |org: &Org, p: &str| -> Vec<String> {
            org.table(req).referring(0, p).map(str::to_owned).collect()
        };
        assert_eq!(referring(&org, "p1"), ["r1", "r2"]);
        org.upsert(req, entry("Requirement", "r1", 9, spec("p2")));
        assert_eq!(referring(&org, "p1"), ["r2"]);
        assert_eq!(referring(&org, "p2"), ["r1"]);
        // A stale event (resource version 8 after 9) changes nothing.
        org.upsert(req, entry("Requirement", "r1", 8, spec("p3")));
        assert_eq!(referring(&org, "p2"), ["r1"]);
        assert!(referring(&org, "p3").is_empty());
        // Archiving takes an object out of the reverse index.
        let archived = serde_json::json!({"title": "t", "persona": "p2", "archived": true});
        org.upsert(req, entry("Requirement", "r1", 10, archived));
        assert!(referring(&org, "p2").is_empty());
        assert_eq!(org.table(req).referring_count(0, "p1"), 1);
        org.remove(req, "r2");
        assert!(referring(&org, "p1").is_empty());
        assert_eq!(org.table(req).referring_count(0, "p1"), 0);
        assert_eq!(
            (org.table(req).count(true), org.table(req).count(false)),
            (1, 0)
        );
        assert_eq!(org.table(req).len(), 1);
        // Quotas read the bytes held, which follow every change.
        let held = |org: &Org| org.bytes(req);
        let r1 = org.get(req, "r1").unwrap().footprint();
        assert_eq!(held(&org), r1);
        let title = |t: String| serde_json::json!({ "title": t });
        org.upsert(req, entry("Requirement", "r3", 11, title("x".repeat(1000))));
        let big = held(&org);
        assert_eq!(big, r1 + org.get(req, "r3").unwrap().footprint());
        org.upsert(req, entry("Requirement", "r3", 12, title("y".into())));
        assert_eq!(held(&org), big - 999);
        org.remove(req, "r3");
        org.remove(req, "r1");
        assert_eq!(held(&org), 0);
    }

    #[test]
    fn a_relist_replaces_only_its_scope_and_syncs_its_watch() {
        let req = by_name("requirement").unwrap();
        let store = ResourceStore::new(2);
        let spec = serde_json::json!({"title": "t"});
        store.upsert(req, "a", entry("Requirement", "old", 1, spec.clone()));
        store.upsert(req, "b", entry("Requirement", "kept", 1, spec.clone()));
        assert!(!store.is_synced());
        store.replace(
            0,
            req,
            Some("a"),
            [("a".to_owned(), entry("Requirement", "new", 2, spec.clone()))],
        );
        assert!(!store.is_synced());
        assert!(store.read("a", |org| org.get(req, "old").is_none()));
        assert!(store.read("a", |org| org.get(req, "new").is_some()));
        assert!(store.read("b", |org| org.get(req, "kept").is_some()));
        assert_eq!(store.read("nobody", |org| org.all(req).count()), 0);
        store.replace(1, req, Some("b"), []);
        store.replace(1, req, Some("b"), []);
        assert!(store.is_synced());
    }
}
