use super::*;
use serde_json::json;

/// A fingerprint as stored in `run_tables.fingerprint` by reproject before the fingerprint
/// was typed: sql/fingerprint.sql on PostgreSQL 15, for a table with every kind of thing
/// (grants, column grants, RLS, a trigger, a view and a materialized view, foreign keys both
/// ways, serial and identity sequences, a publication, statistics, comments).
const STORED: &str = include_str!("stored_pg15.json");

fn stored() -> Value {
    serde_json::from_str(STORED).unwrap()
}

fn fp(v: Value) -> Fingerprint {
    serde_json::from_value(v).unwrap()
}

#[test]
fn a_stored_fingerprint_reads_and_writes_back_unchanged() {
    let typed: Fingerprint = serde_json::from_str(STORED).unwrap();
    assert_eq!(typed.owner, "postgres");
    assert_eq!(typed.replica_identity, "i");
    assert!(typed.row_security && !typed.force_row_security);
    assert_eq!(typed.column("balance").unwrap().statistics, Some(500));
    assert_eq!(
        typed.column("balance").unwrap().comment.as_deref(),
        Some("in cents")
    );
    assert_eq!(typed.foreign_keys().count(), 1);
    assert_eq!(typed.referenced_by[0].name, "transfers_account_fk");
    assert!(typed.views.iter().any(View::is_materialized));
    assert!(typed.sequences.iter().any(Sequence::is_identity));
    assert_eq!(typed.publications[0].publication, "balances_pub");
    assert_eq!(typed.publications[0].columns, None);
    // Every key is a field: nothing is lost or renamed on the way back.
    assert_eq!(serde_json::to_value(&typed).unwrap(), stored());
}

#[test]
fn an_older_row_with_fewer_keys_and_nulls_still_reads() {
    let mut old = stored();
    let map = old.as_object_mut().unwrap();
    for key in ["toast_reloptions", "statistics", "views"] {
        map.remove(key);
    }
    map.insert("columns".into(), Value::Null);
    let typed = fp(old);
    assert!(typed.columns.is_empty() && typed.views.is_empty());
    assert!(typed.toast_reloptions.is_empty());
    assert_eq!(typed.indexes.len(), 2);
    // PostgreSQL 17 stores a default statistics target as NULL.
    let c: Column = serde_json::from_value(json!({"name": "a", "statistics": null})).unwrap();
    assert_eq!(c.statistics, None);
}

#[test]
fn a_stored_shaped_fingerprint_reads_with_what_the_reshape_set() {
    let mut v = stored();
    v["set_by_reshape"] = json!({"balance": ["comment", "statistics"]});
    let shaped: Shaped = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(
        shaped.set_by_reshape["balance"],
        [ColumnProperty::Comment, ColumnProperty::Statistics]
    );
    assert_eq!(shaped.fingerprint.owner, "postgres");
    assert_eq!(serde_json::to_value(&shaped).unwrap(), v);
    // Recorded before `set_by_reshape` existed.
    let older: Shaped = serde_json::from_value(stored()).unwrap();
    assert!(older.set_by_reshape.is_empty());
}

#[test]
fn differences_name_the_thing() {
    let before = fp(json!({
        "owner": "app",
        "indexes": [{"name": "t_pkey", "definition": "CREATE UNIQUE INDEX t_pkey ON public.t USING btree (id)"}],
        "policies": [{"name": "own_rows", "using": "(owner = CURRENT_USER)"}],
        "acl": [{"grantee": "app", "privilege": "SELECT"}, {"grantee": "owner", "privilege": "INSERT"}],
    }));
    let mut after = before.clone();
    assert!(diff(&before, &after).is_empty());
    after.owner = "postgres".into();
    after.indexes[0].name = "t_rebuild_pkey".into();
    after.policies.clear();
    after.acl.remove(0);
    let d = diff(&before, &after);
    assert!(
        d.contains(&"owner: was \"app\", now \"postgres\"".to_string()),
        "{d:?}"
    );
    assert!(
        d.contains(&"indexes `t_pkey` is missing".to_string()),
        "{d:?}"
    );
    assert!(
        d.contains(&"indexes `t_rebuild_pkey` is new".to_string()),
        "{d:?}"
    );
    assert!(
        d.contains(&"policies `own_rows` is missing".to_string()),
        "{d:?}"
    );
    assert!(d.iter().any(|l| l.starts_with("acl:")), "{d:?}");
}

#[test]
fn the_structure_drops_foreign_keys_and_what_a_swap_carries() {
    let mut a = fp(json!({
        "constraints": [{"name": "a", "type": "p"}, {"name": "b", "type": "f"}],
        "columns": [{"name": "x", "type": "int", "comment": "c", "statistics": 5}],
        "owner": "x"
    }));
    let s = a.structure();
    assert_eq!(
        s.shape
            .constraints
            .iter()
            .map(|c| &c.name[..])
            .collect::<Vec<_>>(),
        ["a"]
    );
    // Grants, comments and statistics targets of columns, the owner, foreign keys: carried
    // over at the swap, so not structure.
    a.owner = "y".into();
    a.columns[0].comment = None;
    a.columns[0].statistics = Some(7);
    a.constraints.pop();
    assert!(diff(&s, &a.structure()).is_empty());
    a.columns[0].type_name = "bigint".into();
    assert_eq!(
        diff(&s, &a.structure()),
        ["columns `x`.type: was \"int\", now \"bigint\""]
    );
    let json = serde_json::to_value(a.structure()).unwrap();
    let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "columns",
            "constraints",
            "indexes",
            "persistence",
            "statistics",
            "tablespace"
        ]
    );
}
