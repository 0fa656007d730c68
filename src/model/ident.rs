//! Identifiers: parsing names from the config, quoting them, and deriving helper names.
//!
//! PostgreSQL silently truncates identifiers longer than 63 bytes, so a long table name plus
//! `_rebuild` could become some other table's name. Every name reproject builds goes through
//! [`helper_name`], which never exceeds the limit and never collides.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::fmt;

/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
pub const MAX_IDENT_BYTES: usize = 63;

/// Quotes an identifier for SQL: `my table` → `"my table"`.
pub fn quote(ident: &str) -> String {
    postgres_protocol::escape::escape_identifier(ident)
}

/// Quotes a string literal for SQL (used only for names in catalog queries we build).
pub fn literal(value: &str) -> String {
    postgres_protocol::escape::escape_literal(value)
}

/// A table name, schema-qualified once resolved against the database.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct TableName {
    /// The schema.
    pub schema: String,
    /// The table name, unquoted.
    pub name: String,
}

impl TableName {
    /// A table name from its unquoted parts.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// The quoted, qualified form for SQL: `"public"."orders"`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote(&self.schema), quote(&self.name))
    }

    /// A sibling table in the same schema.
    pub fn sibling(&self, name: impl Into<String>) -> TableName {
        TableName::new(self.schema.clone(), name)
    }

    /// `schema.name` as a string literal, for `to_regclass(...)` and friends.
    pub fn regclass_literal(&self) -> String {
        literal(&self.quoted())
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.schema == "public" {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}.{}", self.schema, self.name)
        }
    }
}

/// A table reference as written in the config: `orders`, `shop.orders`, `"Odd Name"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfigTableRef {
    /// The schema, if written.
    pub schema: Option<String>,
    /// The table name, unquoted.
    pub name: String,
}

impl fmt::Display for ConfigTableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// Parses `name`, `schema.name`, with optional double quotes, folding unquoted parts to lower
/// case as PostgreSQL does.
pub fn parse_table_ref(text: &str) -> Result<ConfigTableRef> {
    let parts = split_qualified(text.trim())
        .map_err(|why| Error::config(format!("invalid table name `{text}`")).caused_by(why))?;
    for part in &parts {
        check_ident(part)
            .map_err(|why| Error::config(format!("invalid table name `{text}`")).caused_by(why))?;
    }
    match parts.as_slice() {
        [name] => Ok(ConfigTableRef {
            schema: None,
            name: name.clone(),
        }),
        [schema, name] => Ok(ConfigTableRef {
            schema: Some(schema.clone()),
            name: name.clone(),
        }),
        _ => Err(Error::config(format!(
            "invalid table name `{text}`: expected `table` or `schema.table`"
        ))),
    }
}

/// Rejects identifiers PostgreSQL would truncate or cannot store.
pub fn check_ident(ident: &str) -> std::result::Result<(), String> {
    if ident.is_empty() {
        return Err("empty identifier".into());
    }
    if ident.contains('\0') {
        return Err("identifier contains a NUL byte".into());
    }
    if ident.len() > MAX_IDENT_BYTES {
        return Err(format!(
            "`{ident}` is {} bytes long; PostgreSQL would truncate it to {MAX_IDENT_BYTES}",
            ident.len()
        ));
    }
    Ok(())
}

fn split_qualified(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err("unterminated quoted identifier".into()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if !(c.is_alphanumeric() || c == '_' || c == '$') {
                    return Err(format!(
                        "unexpected character `{c}` (quote the name with double quotes)"
                    ));
                }
                part.extend(c.to_lowercase());
                chars.next();
            }
        }
        parts.push(part);
        match chars.next() {
            None => return Ok(parts),
            Some('.') => continue,
            Some(c) => return Err(format!("unexpected character `{c}` after a quoted name")),
        }
    }
}

/// Derives the name of a helper table (`orders_rebuild`, `orders_old`, …) from a live name.
///
/// Short names get the plain suffix. When `name_suffix` would exceed 63 bytes, the live name is
/// shortened and a hash of the full name is inserted, so two long names that share a prefix
/// still get different helpers, and nothing is ever truncated by the server.
pub fn helper_name(live: &str, suffix: &str) -> String {
    let plain = format!("{live}_{suffix}");
    if plain.len() <= MAX_IDENT_BYTES {
        return plain;
    }
    let digest = Sha256::digest(live.as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let room = MAX_IDENT_BYTES - (1 + hash.len() + 1 + suffix.len());
    let mut cut = room.min(live.len());
    while !live.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash}_{suffix}", &live[..cut])
}

/// The clone a rebuild writes into: `orders` → `orders_rebuild`.
pub fn rebuild_table(live: &TableName) -> TableName {
    live.sibling(helper_name(&live.name, "rebuild"))
}

/// Where the previous live table goes after a swap: `orders` → `orders_old`.
pub fn old_table(live: &TableName) -> TableName {
    live.sibling(helper_name(&live.name, "old"))
}

/// Where a rollback keeps the table it replaced: `orders` → `orders_rolled_back_12`.
pub fn rolled_back_table(live: &TableName, run_id: i64) -> TableName {
    live.sibling(helper_name(&live.name, &format!("rolled_back_{run_id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("orders"), "\"orders\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(TableName::new("public", "x").quoted(), "\"public\".\"x\"");
    }

    #[test]
    fn parses_table_refs() {
        let r = parse_table_ref("Orders").unwrap();
        assert_eq!(r.schema, None);
        assert_eq!(r.name, "orders");
        let r = parse_table_ref("shop.\"Odd.Name\"").unwrap();
        assert_eq!(r.schema.as_deref(), Some("shop"));
        assert_eq!(r.name, "Odd.Name");
        assert!(parse_table_ref("a.b.c").is_err());
        assert!(parse_table_ref("a; drop table x").is_err());
        assert!(parse_table_ref(&"x".repeat(64)).is_err());
    }

    #[test]
    fn helper_names_never_exceed_the_limit() {
        assert_eq!(helper_name("orders", "rebuild"), "orders_rebuild");
        let long = "t".repeat(60);
        let rebuilt = helper_name(&long, "rebuild");
        assert!(rebuilt.len() <= MAX_IDENT_BYTES, "{rebuilt}");
        assert!(rebuilt.ends_with("_rebuild"));
        let other = format!("{}u", "t".repeat(59));
        assert_ne!(helper_name(&other, "rebuild"), rebuilt);
        // Multi-byte characters are never split.
        let accents = "é".repeat(31);
        let h = helper_name(&accents, "old");
        assert!(h.len() <= MAX_IDENT_BYTES);
    }
}
