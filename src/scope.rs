//! Scopes: `<type>:read` and `<type>:write`, with `*` for every type. Write
//! implies read. Used when a token is issued (a requested scope must be
//! covered by the credential's) and when the JSON:API authorizes a call.

use crate::crd::registry;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope<'a> {
    /// `None` is `*`.
    pub resource: Option<&'a str>,
    pub access: Access,
}

impl<'a> Scope<'a> {
    pub fn parse(text: &'a str) -> Option<Self> {
        let (resource, access) = text.split_once(':')?;
        let access = match access {
            "read" => Access::Read,
            "write" => Access::Write,
            _ => return None,
        };
        let resource = match resource {
            "*" => None,
            t if registry::by_name(t).is_some() => Some(t),
            _ => return None,
        };
        Some(Self { resource, access })
    }

    /// Whether holding `self` grants `wanted`.
    pub fn covers(&self, wanted: &Scope<'_>) -> bool {
        let resource = self.resource.is_none() || self.resource == wanted.resource;
        let access = self.access == Access::Write || wanted.access == Access::Read;
        resource && access
    }
}

/// Whether any of `granted` allows `access` to `resource`.
pub fn allows<S: AsRef<str>>(granted: &[S], resource: &str, access: Access) -> bool {
    let wanted = Scope {
        resource: Some(resource),
        access,
    };
    granted
        .iter()
        .filter_map(|g| Scope::parse(g.as_ref()))
        .any(|g| g.covers(&wanted))
}

/// What a token issued with `issued` may do while its credential holds
/// `current`: the scopes both allow, written as few as possible (`*` where
/// every type is allowed, write without the read it implies), in the
/// registry's order.
pub fn effective<S: AsRef<str>>(issued: &[&str], current: &[S]) -> Vec<String> {
    let current: Vec<&str> = current.iter().map(AsRef::as_ref).collect();
    let both = |resource: Option<&str>, access: Access| {
        let wanted = Scope { resource, access };
        let covered = |granted: &[&str]| {
            granted
                .iter()
                .filter_map(|g| Scope::parse(g))
                .any(|g| g.covers(&wanted))
        };
        covered(issued) && covered(&current)
    };
    let name = |access: Access| match access {
        Access::Read => "read",
        Access::Write => "write",
    };
    let mut out = Vec::new();
    for access in [Access::Write, Access::Read] {
        if both(None, access) {
            out.push(format!("*:{}", name(access)));
            break;
        }
    }
    let every_type: Vec<Scope<'static>> = out
        .iter()
        .filter_map(|s| match s.as_str() {
            "*:write" => Some(Scope {
                resource: None,
                access: Access::Write,
            }),
            "*:read" => Some(Scope {
                resource: None,
                access: Access::Read,
            }),
            _ => None,
        })
        .collect();
    for ty in registry::TYPES {
        for access in [Access::Write, Access::Read] {
            let wanted = Scope {
                resource: Some(ty.name),
                access,
            };
            let covered = every_type.iter().any(|s| s.covers(&wanted));
            if !covered && both(Some(ty.name), access) {
                out.push(format!("{}:{}", ty.name, name(access)));
                break;
            }
        }
    }
    out
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("unknown scope {0:?}")]
    Unknown(String),
    #[error("scope {0:?} exceeds the credential's scopes")]
    NotGranted(String),
}

/// The scopes a token gets: all of the credential's when `requested` is
/// absent, or the requested ones (space-delimited, RFC 6749 section 3.3) when
/// the credential covers each of them.
pub fn narrow(granted: &[String], requested: Option<&str>) -> Result<Vec<String>, ScopeError> {
    let Some(requested) = requested.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(granted.to_vec());
    };
    let mut out: Vec<String> = Vec::new();
    for item in requested.split(' ').filter(|s| !s.is_empty()) {
        let wanted = Scope::parse(item).ok_or_else(|| ScopeError::Unknown(item.to_owned()))?;
        let ok = granted
            .iter()
            .filter_map(|g| Scope::parse(g))
            .any(|g| g.covers(&wanted));
        if !ok {
            return Err(ScopeError::NotGranted(item.to_owned()));
        }
        if !out.iter().any(|o| o == item) {
            out.push(item.to_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn effective_scopes_are_what_both_allow() {
        let eff =
            |issued: &[&str], current: &[&str]| effective(issued, &strings(current)).join(" ");
        assert_eq!(eff(&["*:write"], &["*:write"]), "*:write");
        assert_eq!(eff(&["*:write"], &["*:read"]), "*:read");
        assert_eq!(eff(&["*:read"], &["*:write"]), "*:read");
        assert_eq!(
            eff(&["*:write"], &["requirement:read", "persona:write"]),
            "requirement:read persona:write"
        );
        assert_eq!(
            eff(&["*:read", "requirement:write"], &["*:write"]),
            "*:read requirement:write"
        );
        assert_eq!(eff(&["persona:read"], &["requirement:write"]), "");
        assert_eq!(
            eff(&["requirement:write"], &["requirement:write", "x:y"]),
            "requirement:write"
        );
    }

    #[test]
    fn parses_known_types_only() {
        assert_eq!(
            Scope::parse("use_case:write"),
            Some(Scope {
                resource: Some("use_case"),
                access: Access::Write
            })
        );
        assert_eq!(Scope::parse("*:read").unwrap().resource, None);
        for bad in [
            "requirements:read",
            "requirement:admin",
            "requirement",
            ":read",
            "*:*",
        ] {
            assert_eq!(Scope::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn write_implies_read_and_star_covers_every_type() {
        assert!(allows(&["requirement:write"], "requirement", Access::Read));
        assert!(!allows(&["requirement:read"], "requirement", Access::Write));
        assert!(allows(&["*:read"], "persona", Access::Read));
        assert!(!allows(&["*:read"], "persona", Access::Write));
        assert!(allows(&["*:write"], "team", Access::Write));
        assert!(!allows(&["persona:write"], "requirement", Access::Read));
        assert!(!allows::<&str>(&[], "requirement", Access::Read));
    }

    #[test]
    fn narrowing_keeps_only_covered_scopes() {
        let granted = strings(&["*:read", "requirement:write"]);
        assert_eq!(narrow(&granted, None).unwrap(), granted);
        assert_eq!(narrow(&granted, Some("  ")).unwrap(), granted);
        assert_eq!(
            narrow(
                &granted,
                Some("persona:read requirement:write persona:read")
            )
            .unwrap(),
            strings(&["persona:read", "requirement:write"])
        );
        assert_eq!(
            narrow(&granted, Some("persona:write")),
            Err(ScopeError::NotGranted("persona:write".into()))
        );
        assert_eq!(
            narrow(&granted, Some("*:write")),
            Err(ScopeError::NotGranted("*:write".into()))
        );
        assert_eq!(
            narrow(&granted, Some("admin")),
            Err(ScopeError::Unknown("admin".into()))
        );
    }
}
