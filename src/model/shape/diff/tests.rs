use super::*;

/// A (partial) fingerprint written as JSON, as the catalog query returns it.
fn typed(v: &Value) -> Fingerprint {
    serde_json::from_value(v.clone()).unwrap()
}

fn attr(attnum: i16, name: &str, ty: &str) -> Attribute {
    Attribute {
        attnum,
        column: Column {
            name: name.into(),
            type_name: ty.into(),
        },
    }
}

#[test]
fn columns_are_matched_by_attribute_number() {
    let before = [
        attr(1, "id", "integer"),
        attr(2, "owner", "text"),
        attr(3, "amount", "integer"),
        attr(4, "note", "text"),
    ];
    // owner renamed, amount retyped, note dropped, currency added.
    let after = [
        attr(1, "id", "integer"),
        attr(2, "owner_id", "text"),
        attr(3, "amount", "numeric(12,2)"),
        attr(5, "currency", "text"),
    ];
    let map = column_map(&before, &after);
    assert_eq!(map.len(), 5);
    let changes = changed(&map);
    assert_eq!(changes.len(), 4);
    assert!(changes[0].is_renamed() && !changes[0].is_retyped());
    assert!(changes[1].is_retyped() && !changes[1].is_renamed());
    assert!(changes[2].is_dropped());
    assert!(changes[3].is_added());
    assert_eq!(renamed(&map, "owner"), Some("owner_id"));
    assert_eq!(renamed(&map, "note"), None);
    assert_eq!(renamed(&map, "id"), Some("id"));
    let back = reversed(&map);
    assert_eq!(renamed(&back, "owner_id"), Some("owner"));
    assert_eq!(renamed(&back, "currency"), None);
    assert_eq!(map_from_json(&map_to_json(&map)), map);
    let words: Vec<String> = changes.iter().map(describe_column).collect();
    assert_eq!(
        words,
        [
            "renamed column owner → owner_id",
            "retyped column amount: integer → numeric(12,2)",
            "dropped column note text",
            "added column currency text"
        ]
    );
}

#[test]
fn derived_names_replace_the_clone_prefix_only() {
    assert_eq!(
        derived_name(
            "balances_rebuild_currency_idx",
            "balances_rebuild",
            "balances"
        ),
        "balances_currency_idx"
    );
    assert_eq!(
        derived_name("by_currency", "balances_rebuild", "balances"),
        "by_currency"
    );
    assert_eq!(
        derived_name("balances_rebuildx_idx", "balances_rebuild", "balances"),
        "balances_rebuildx_idx"
    );
}

#[test]
fn canonical_names_come_from_the_live_table_or_are_derived() {
    let live = json!({
        "indexes": [
            {"name": "balances_pkey", "definition": "CREATE UNIQUE INDEX balances_pkey ON public.balances USING btree (id)"},
            {"name": "by_owner", "definition": "CREATE INDEX by_owner ON public.balances USING btree (owner)"}
        ],
        "constraints": [
            {"name": "balances_pkey", "type": "p", "definition": "PRIMARY KEY (id)"},
            {"name": "positive", "type": "c", "definition": "CHECK ((amount > 0))"}
        ]
    });
    let before = json!({
        "indexes": [
            {"name": "balances_rebuild_pkey", "definition": "CREATE UNIQUE INDEX balances_rebuild_pkey ON public.balances_rebuild USING btree (id)"},
            {"name": "balances_rebuild_owner_idx", "definition": "CREATE INDEX balances_rebuild_owner_idx ON public.balances_rebuild USING btree (owner)"}
        ],
        "constraints": [
            {"name": "balances_rebuild_pkey", "type": "p", "definition": "PRIMARY KEY (id)"},
            {"name": "positive", "type": "c", "definition": "CHECK ((amount > 0))"}
        ]
    });
    // The owner index is dropped, the primary key widened, a currency index and check added.
    let after = json!({
        "indexes": [
            {"name": "balances_rebuild_pkey", "definition": "CREATE UNIQUE INDEX balances_rebuild_pkey ON public.balances_rebuild USING btree (id, currency)"},
            {"name": "balances_rebuild_currency_idx", "definition": "CREATE INDEX balances_rebuild_currency_idx ON public.balances_rebuild USING btree (currency)"}
        ],
        "constraints": [
            {"name": "balances_rebuild_pkey", "type": "p", "definition": "PRIMARY KEY (id, currency)"},
            {"name": "balances_rebuild_currency_check", "type": "c", "definition": "CHECK ((length(currency) = 3))"},
            {"name": "positive", "type": "c", "definition": "CHECK ((amount > 0))"}
        ]
    });
    let shaped = canonicalize(
        &typed(&live),
        &typed(&before),
        &typed(&after),
        "balances_rebuild",
        "public",
        "balances",
    );
    let shaped_fp = shaped;
    let shaped = serde_json::to_value(&shaped_fp).unwrap();
    let names: Vec<&str> = shaped["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["balances_currency_idx", "balances_pkey"]);
    assert_eq!(
        shaped["indexes"][1]["definition"],
        "CREATE UNIQUE INDEX balances_pkey ON public.balances USING btree (id, currency)"
    );
    let cons: Vec<&str> = shaped["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        cons,
        ["balances_currency_check", "balances_pkey", "positive"]
    );
    let words: Vec<String> = object_changes(&typed(&live), &shaped_fp)
        .iter()
        .map(describe_object)
        .collect();
    assert_eq!(
        words,
        [
            "changed primary key: PRIMARY KEY (id) → PRIMARY KEY (id, currency)",
            "added index balances_currency_idx: btree (currency)",
            "dropped index by_owner: btree (owner)",
            "added constraint balances_currency_check: CHECK ((length(currency) = 3))"
        ]
    );
}

#[test]
fn the_target_carries_kept_columns_through_renames() {
    let out = json!({
        "owner": "app",
        "columns": [
            {"name": "id", "type": "integer", "acl": [], "comment": null, "statistics": -1},
            {"name": "owner", "type": "text", "acl": [{"grantee": "reader", "privilege": "SELECT", "grantable": false}], "comment": "who", "statistics": 500},
            {"name": "note", "type": "text", "acl": [{"grantee": "reader", "privilege": "SELECT", "grantable": false}], "comment": null, "statistics": -1}
        ],
        "constraints": [{"name": "fk", "type": "f", "definition": "FOREIGN KEY (id) REFERENCES a(id)"}],
        "indexes": [{"name": "balances_pkey", "replica_identity": true, "clustered": false}],
        "publications": [{"publication": "p", "columns": ["id", "owner", "note"], "where": null}],
        "sequences": [{"name": "s", "column": "note", "kind": "a"}]
    });
    let shaped = json!({
        "columns": [
            {"name": "id", "type": "integer", "acl": [], "comment": null, "statistics": -1},
            {"name": "owner_id", "type": "text", "acl": [], "comment": "who", "statistics": 500},
            {"name": "currency", "type": "text", "acl": [], "comment": "ISO", "statistics": 100}
        ],
        "constraints": [{"name": "balances_pkey", "type": "p", "definition": "PRIMARY KEY (id)"}],
        "indexes": [{"name": "balances_pkey", "replica_identity": false, "clustered": false}],
        "set_by_reshape": {"id": ["comment"]}
    });
    let map = column_map(
        &[
            attr(1, "id", "integer"),
            attr(2, "owner", "text"),
            attr(3, "note", "text"),
        ],
        &[
            attr(1, "id", "integer"),
            attr(2, "owner_id", "text"),
            attr(4, "currency", "text"),
        ],
    );
    let mut out = out;
    out["columns"][0]["comment"] = json!("the old comment");
    let mut shaped = shaped;
    shaped["columns"][0]["comment"] = json!("set by the reshape");
    let shaped_typed: Shaped = serde_json::from_value(shaped.clone()).unwrap();
    let t = serde_json::to_value(target(&typed(&out), &shaped_typed, &map)).unwrap();
    assert_eq!(t["owner"], "app");
    assert_eq!(t["columns"][0]["comment"], "set by the reshape");
    assert_eq!(
        serde_json::to_value(set_by_ddl_reversed(&shaped_typed.set_by_reshape, &map)).unwrap(),
        json!({"id": ["comment"]})
    );
    assert_eq!(t["columns"][1]["acl"], out["columns"][1]["acl"]);
    assert_eq!(t["columns"][1]["name"], "owner_id");
    assert_eq!(t["columns"][2]["comment"], "ISO");
    assert_eq!(t["columns"][2]["statistics"], 100);
    assert_eq!(t["constraints"].as_array().unwrap().len(), 2);
    assert_eq!(t["indexes"][0]["replica_identity"], true);
    assert_eq!(t["publications"][0]["columns"], json!(["id", "owner_id"]));
    assert_eq!(t["sequences"], json!([]));
}
