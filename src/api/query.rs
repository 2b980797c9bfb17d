//! The JSON:API query language, parsed and checked against a type before
//! anything is read: `filter[...]`, `sort`, both pagination styles,
//! `fields[type]` and `include`. Anything unknown is a 400 naming the
//! parameter.

use crate::crd::registry::{self, AttrKind, Field, ResourceType, TYPES};

pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 100;
/// Bounds on `include`, so one request cannot ask for the whole graph
/// many times over.
const MAX_INCLUDE_PATHS: usize = 16;
const MAX_INCLUDE_DEPTH: usize = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    Id(Vec<String>),
    /// Attribute equals (or, for lists, contains) one of the values.
    Attribute(usize, Vec<String>),
    /// Relationship or inverse relationship points at one of the ids.
    Related(Field, Vec<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortField {
    Id,
    Field(Field),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SortKey {
    pub field: SortField,
    pub descending: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    Number { number: usize, size: usize },
    Offset { offset: usize, limit: usize },
}

impl Page {
    /// Items skipped and taken.
    pub fn window(&self) -> (usize, usize) {
        match *self {
            Page::Number { number, size } => ((number - 1).saturating_mul(size), size),
            Page::Offset { offset, limit } => (offset, limit),
        }
    }
}

/// Relationships to include, as a tree rooted at the primary type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Include {
    pub children: Vec<(Field, Include)>,
}

impl Include {
    pub fn child(&self, field: Field) -> Option<&Include> {
        self.children
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, i)| i)
    }

    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// Every type this tree includes objects of, below `root`.
    pub fn types(&self, root: &'static ResourceType) -> Vec<&'static ResourceType> {
        let mut out: Vec<&'static ResourceType> = Vec::new();
        for (field, child) in &self.children {
            let Some(target) = root.related(*field) else {
                continue;
            };
            for t in std::iter::once(target).chain(child.types(target)) {
                if !out.iter().any(|o| o.name == t.name) {
                    out.push(t);
                }
            }
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub filters: Vec<Filter>,
    /// Lowercased text `filter[search]` looks for.
    pub search: Option<String>,
    /// Serve archived objects instead of live ones.
    pub archived: bool,
    pub sort: Vec<SortKey>,
    pub page: Page,
    /// Per type (index in `TYPES`): the fields to render, or all.
    pub fields: Vec<Option<Vec<Field>>>,
    pub include: Include,
    /// The parameters other than paging, decoded, for building links.
    pub kept: Vec<(String, String)>,
}

impl Query {
    /// Leaves out of every document the inverse relationships whose objects
    /// the client may not read, as if `fields[...]` had not named them:
    /// their counts and links would tell about those objects.
    pub fn hide_unreadable(&mut self, readable: impl Fn(&ResourceType) -> bool) {
        for ty in TYPES {
            let hidden: Vec<Field> = ty
                .inverses
                .iter()
                .enumerate()
                .filter(|(_, inv)| !registry::by_name(inv.source).is_some_and(&readable))
                .map(|(i, _)| Field::Inverse(i))
                .collect();
            if hidden.is_empty() {
                continue;
            }
            self.fields[ty.index()]
                .get_or_insert_with(|| ty.fields().collect())
                .retain(|f| !hidden.contains(f));
        }
    }

    /// The inverse relationship filters, by parameter, and the type of
    /// objects each one reads.
    pub fn inverse_filters<'q>(
        &'q self,
        ty: &'static ResourceType,
    ) -> impl Iterator<Item = (&'static str, &'static ResourceType)> + 'q {
        self.filters.iter().filter_map(move |f| match f {
            Filter::Related(field @ Field::Inverse(_), _) => {
                let inverse = ty.inverse(*field)?;
                Some((inverse.name, registry::by_name(inverse.source)?))
            }
            _ => None,
        })
    }

    /// Whether `fields[...]` keeps `field` of `ty`: a test for each field
    /// of one type, looked up once.
    pub fn wanted(&self, ty: &ResourceType) -> impl Fn(Field) -> bool + '_ {
        let fields = self.fields[ty.index()].as_deref();
        move |field| fields.is_none_or(|f| f.contains(&field))
    }
}

/// A query parameter that cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{parameter}: {detail}")]
pub struct QueryError {
    pub parameter: String,
    pub detail: String,
}

fn error(parameter: &str, detail: impl Into<String>) -> QueryError {
    QueryError {
        parameter: parameter.to_owned(),
        detail: detail.into(),
    }
}

/// Whether the request is for a collection or one object; only collections
/// take filters, sorting and pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Collection,
    Single,
}

/// Parses a raw query string for `ty`.
pub fn parse(ty: &'static ResourceType, raw: &str, target: Target) -> Result<Query, QueryError> {
    let mut query = Query {
        filters: Vec::new(),
        search: None,
        archived: false,
        sort: Vec::new(),
        page: Page::Number {
            number: 1,
            size: DEFAULT_PAGE_SIZE,
        },
        fields: vec![None; TYPES.len()],
        include: Include::default(),
        kept: Vec::new(),
    };
    let mut seen: Vec<String> = Vec::new();
    let mut paging = Paging::default();
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        let (key, value) = (key.into_owned(), value.into_owned());
        if seen.contains(&key) {
            return Err(error(&key, "is given more than once"));
        }
        seen.push(key.clone());
        let collection_only = || match target {
            Target::Single => Err(error(&key, "applies to collections only")),
            Target::Collection => Ok(()),
        };
        if let Some(name) = bracketed(&key, "filter") {
            collection_only()?;
            parse_filter(ty, &key, name, &value, &mut query)?;
        } else if let Some(name) = bracketed(&key, "fields") {
            let (of, fields) = parse_fields(&key, name, &value)?;
            query.fields[of.index()] = Some(fields);
        } else if let Some(name) = bracketed(&key, "page") {
            collection_only()?;
            paging.set(&key, name, &value)?;
            continue;
        } else if key == "sort" {
            collection_only()?;
            query.sort = parse_sort(ty, &value)?;
        } else if key == "include" {
            query.include = parse_include(ty, &value)?;
        } else {
            return Err(error(&key, "is not a supported query parameter"));
        }
        query.kept.push((key, value));
    }
    query.page = paging.page()?;
    Ok(query)
}

/// `fields[name]=a,b`: the type it names and its fields.
fn parse_fields(
    key: &str,
    name: &str,
    value: &str,
) -> Result<(&'static ResourceType, Vec<Field>), QueryError> {
    let ty = registry::by_name(name).ok_or_else(|| error(key, "is not a resource type"))?;
    let mut fields = Vec::new();
    for f in value.split(',').filter(|f| !f.is_empty()) {
        let field = ty
            .field(f)
            .ok_or_else(|| error(key, format!("{f:?} is not a field of {}", ty.name)))?;
        fields.push(field);
    }
    Ok((ty, fields))
}

/// The `page[...]` parameters given: by number and size, or by offset and
/// limit, never both.
#[derive(Default)]
struct Paging {
    number: Option<usize>,
    size: Option<usize>,
    offset: Option<usize>,
    limit: Option<usize>,
}

impl Paging {
    fn set(&mut self, key: &str, name: &str, value: &str) -> Result<(), QueryError> {
        let n = value
            .parse::<usize>()
            .map_err(|_| error(key, "must be a whole number"))?;
        let sized = (1..=MAX_PAGE_SIZE).contains(&n);
        match name {
            "number" if n >= 1 => self.number = Some(n),
            "size" if sized => self.size = Some(n),
            "limit" if sized => self.limit = Some(n),
            "offset" => self.offset = Some(n),
            "number" => return Err(error(key, "must be 1 or more")),
            "size" | "limit" => {
                return Err(error(key, format!("must be between 1 and {MAX_PAGE_SIZE}")));
            }
            _ => return Err(error(key, "is not a paging parameter")),
        }
        Ok(())
    }

    fn page(self) -> Result<Page, QueryError> {
        let numbered = self.number.is_some() || self.size.is_some();
        let offsetted = self.offset.is_some() || self.limit.is_some();
        match (numbered, offsetted) {
            (true, true) => Err(error(
                "page",
                "use page[number]/page[size] or page[offset]/page[limit], not both",
            )),
            (false, true) => Ok(Page::Offset {
                offset: self.offset.unwrap_or(0),
                limit: self.limit.unwrap_or(DEFAULT_PAGE_SIZE),
            }),
            _ => Ok(Page::Number {
                number: self.number.unwrap_or(1),
                size: self.size.unwrap_or(DEFAULT_PAGE_SIZE),
            }),
        }
    }
}

/// `name` from `prefix[name]`.
fn bracketed<'k>(key: &'k str, prefix: &str) -> Option<&'k str> {
    key.strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')
        .filter(|n| !n.is_empty() && !n.contains(['[', ']']))
}

fn values(key: &str, value: &str) -> Result<Vec<String>, QueryError> {
    let values: Vec<String> = value
        .split(',')
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect();
    if values.is_empty() {
        return Err(error(key, "needs at least one value"));
    }
    Ok(values)
}

fn parse_filter(
    ty: &ResourceType,
    key: &str,
    name: &str,
    value: &str,
    query: &mut Query,
) -> Result<(), QueryError> {
    match name {
        "search" => {
            let text = value.trim();
            if text.is_empty() {
                return Err(error(key, "needs some text"));
            }
            query.search = Some(text.to_lowercase());
        }
        "id" => query.filters.push(Filter::Id(values(key, value)?)),
        _ => match ty.field(name) {
            Some(Field::Archived) => {
                query.archived = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(error(key, "must be true or false")),
                }
            }
            Some(Field::Attribute(i)) => {
                let attr = &ty.attributes[i];
                let values = values(key, value)?;
                match attr.kind {
                    AttrKind::Time => return Err(error(key, "timestamps cannot be filtered")),
                    AttrKind::Enum(allowed) => {
                        if let Some(bad) = values.iter().find(|v| !allowed.contains(&v.as_str())) {
                            return Err(error(
                                key,
                                format!("{bad:?} is not one of {}", allowed.join(", ")),
                            ));
                        }
                    }
                    AttrKind::String | AttrKind::List => {}
                }
                query.filters.push(Filter::Attribute(i, values));
            }
            Some(f @ (Field::Relationship(_) | Field::Inverse(_))) => {
                query.filters.push(Filter::Related(f, values(key, value)?));
            }
            Some(Field::CreatedAt | Field::UpdatedAt) => {
                return Err(error(key, "timestamps cannot be filtered"));
            }
            None => {
                return Err(error(
                    key,
                    format!("{name:?} is not a field of {}", ty.name),
                ));
            }
        },
    }
    Ok(())
}

fn parse_sort(ty: &ResourceType, value: &str) -> Result<Vec<SortKey>, QueryError> {
    let mut keys = Vec::new();
    for item in value.split(',') {
        let (name, descending) = match item.strip_prefix('-') {
            Some(name) => (name, true),
            None => (item, false),
        };
        let field = match name {
            "id" => SortField::Id,
            _ => match ty.field(name) {
                Some(Field::Attribute(i)) if ty.attributes[i].kind == AttrKind::List => {
                    return Err(error(
                        "sort",
                        format!("{name:?} is a list and cannot be sorted"),
                    ));
                }
                Some(
                    f @ (Field::Attribute(_)
                    | Field::Archived
                    | Field::CreatedAt
                    | Field::UpdatedAt),
                ) => SortField::Field(f),
                Some(_) => {
                    return Err(error(
                        "sort",
                        format!("{name:?} is a relationship and cannot be sorted"),
                    ));
                }
                None => {
                    return Err(error(
                        "sort",
                        format!("{name:?} is not a field of {}", ty.name),
                    ));
                }
            },
        };
        if keys.iter().any(|k: &SortKey| k.field == field) {
            return Err(error("sort", format!("{name:?} is given more than once")));
        }
        keys.push(SortKey { field, descending });
    }
    Ok(keys)
}

fn parse_include(ty: &'static ResourceType, value: &str) -> Result<Include, QueryError> {
    let mut root = Include::default();
    let paths: Vec<&str> = value.split(',').filter(|p| !p.is_empty()).collect();
    if paths.len() > MAX_INCLUDE_PATHS {
        return Err(error(
            "include",
            format!("at most {MAX_INCLUDE_PATHS} paths"),
        ));
    }
    for path in paths {
        let segments: Vec<&str> = path.split('.').collect();
        if segments.len() > MAX_INCLUDE_DEPTH {
            return Err(error(
                "include",
                format!("{path:?} is deeper than {MAX_INCLUDE_DEPTH}"),
            ));
        }
        let (mut node, mut at) = (&mut root, ty);
        for segment in segments {
            let field = match at.field(segment) {
                Some(f @ (Field::Relationship(_) | Field::Inverse(_))) => f,
                _ => {
                    return Err(error(
                        "include",
                        format!("{segment:?} is not a relationship of {}", at.name),
                    ));
                }
            };
            at = at.related(field).unwrap_or(at);
            let i = match node.children.iter().position(|(f, _)| *f == field) {
                Some(i) => i,
                None => {
                    node.children.push((field, Include::default()));
                    node.children.len() - 1
                }
            };
            node = &mut node.children[i].1;
        }
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::registry::by_name;

    fn req() -> &'static ResourceType {
        by_name("requirement").unwrap()
    }

    fn parse_err(raw: &str) -> QueryError {
        parse(req(), raw, Target::Collection).unwrap_err()
    }

    #[test]
    fn parses_the_whole_language() {
        let q = parse(
            req(),
            "filter%5Bstatus%5D=draft,active&filter[persona]=p1&filter[search]=CSV%20Export\
             &filter[archived]=true&sort=-priority,title&page[number]=2&page[size]=5\
             &fields[requirement]=title,persona&include=persona,use_cases.test_cases",
            Target::Collection,
        )
        .unwrap();
        assert_eq!(
            q.filters,
            [
                Filter::Attribute(5, vec!["draft".into(), "active".into()]),
                Filter::Related(Field::Relationship(0), vec!["p1".into()]),
            ]
        );
        assert_eq!(q.search.as_deref(), Some("csv export"));
        assert!(q.archived);
        assert_eq!(
            q.sort,
            [
                SortKey {
                    field: SortField::Field(Field::Attribute(6)),
                    descending: true
                },
                SortKey {
                    field: SortField::Field(Field::Attribute(0)),
                    descending: false
                },
            ]
        );
        assert_eq!(q.page, Page::Number { number: 2, size: 5 });
        assert_eq!(q.page.window(), (5, 5));
        assert_eq!(
            q.fields[0],
            Some(vec![Field::Attribute(0), Field::Relationship(0)])
        );
        assert!(q.wanted(req())(Field::Attribute(0)));
        assert!(!q.wanted(req())(Field::Attribute(1)));
        assert!(q.wanted(by_name("persona").unwrap())(Field::Attribute(1)));
        let included: Vec<&str> = q.include.types(req()).iter().map(|t| t.name).collect();
        assert_eq!(included, ["persona", "use_case", "test_case"]);
        let use_cases = q.include.child(Field::Inverse(0)).unwrap();
        assert_eq!(
            use_cases.children,
            [(Field::Inverse(0), Include::default())]
        );
        assert!(q.include.child(Field::Relationship(0)).unwrap().is_empty());
        // Paging parameters are rebuilt per link; the rest is kept.
        let kept: Vec<&str> = q.kept.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kept,
            [
                "filter[status]",
                "filter[persona]",
                "filter[search]",
                "filter[archived]",
                "sort",
                "fields[requirement]",
                "include"
            ]
        );
    }

    #[test]
    fn pagination_styles_and_defaults() {
        let page = |raw| parse(req(), raw, Target::Collection).unwrap().page;
        assert_eq!(
            page(""),
            Page::Number {
                number: 1,
                size: 20
            }
        );
        assert_eq!(
            page("page[offset]=30"),
            Page::Offset {
                offset: 30,
                limit: 20
            }
        );
        assert_eq!(
            page("page[limit]=100"),
            Page::Offset {
                offset: 0,
                limit: 100
            }
        );
        assert_eq!(page("page[size]=3"), Page::Number { number: 1, size: 3 });
    }

    #[test]
    fn bad_queries_name_the_parameter() {
        for (raw, parameter) in [
            ("colour=red", "colour"),
            ("filter[colour]=red", "filter[colour]"),
            ("filter[status]=urgent", "filter[status]"),
            ("filter[status]=", "filter[status]"),
            ("filter[created_at]=x", "filter[created_at]"),
            ("filter[archived]=yes", "filter[archived]"),
            ("sort=colour", "sort"),
            ("sort=tags", "sort"),
            ("sort=persona", "sort"),
            ("sort=title,-title", "sort"),
            ("page[size]=101", "page[size]"),
            ("page[size]=0", "page[size]"),
            ("page[number]=0", "page[number]"),
            ("page[number]=two", "page[number]"),
            ("page[cursor]=1", "page[cursor]"),
            ("page[number]=1&page[limit]=5", "page"),
            ("fields[widget]=name", "fields[widget]"),
            ("fields[persona]=title", "fields[persona]"),
            ("include=owner", "include"),
            ("include=persona.team", "include"),
            (
                "include=use_cases.test_cases.test_results.test_case",
                "include",
            ),
            ("sort=title&sort=id", "sort"),
            ("filter[]=x", "filter[]"),
        ] {
            assert_eq!(parse_err(raw).parameter, parameter, "{raw}");
        }
        for raw in ["filter[status]=draft", "sort=title", "page[number]=1"] {
            let e = parse(req(), raw, Target::Single).unwrap_err();
            assert_eq!(e.detail, "applies to collections only", "{raw}");
        }
        assert!(
            parse(
                req(),
                "include=persona&fields[persona]=name",
                Target::Single
            )
            .is_ok()
        );
    }
}
