//! Rebuilding into a new shape: the DDL a projection declares for its next generation
//! (`reshape`), applied to the `_rebuild` clones after `LIKE … INCLUDING ALL`, and what that
//! change means for the table's columns and for everything that depends on them.
//!
//! The column changes are read from the catalog, never parsed from the DDL: right after the
//! LIKE clone its columns are the live table's, in the same order; the DDL then renames
//! (same attribute number, new name), retypes (same number, new type), drops (number gone) or
//! adds (new number) columns.
//!
//! `file.rs` reads the reshape file; `apply.rs` runs it on copies of the tables (the clones in
//! the clone transaction, the temporary stand-ins of validation) and reads what it did;
//! `diff.rs` is the pure logic (the column map, canonical names, the target a swap proves,
//! what `plan` shows). The functions below decide, per projection, what a command does about
//! its `reshape` (apply it, or keep a shape that is already live) and refuse what cannot work
//! with one (partial rebuilds, a resume after the file changed, a live runner before the swap).

pub mod apply;
pub mod dependents;

pub mod redefine;
pub mod stand_in;

use crate::model::ident::TableName;
pub use crate::model::shape::{diff, Column, ColumnChange, Planned, ShapeChange};

/// What a rebuild does about each projection's `reshape` (indexed like `config.projections`):
/// none declared, already in place (the newest swapped run applied the same DDL and the live
/// tables still have the shape it made), or to apply.
pub async fn plan(
    client: &impl tokio_postgres::GenericClient,
    config: &crate::model::config::Config,
    tables: &[Vec<TableName>],
) -> crate::error::Result<Vec<Option<Planned>>> {
    let mut out = Vec::new();
    for (pi, p) in config.projections.iter().enumerate() {
        let Some(file) = &p.reshape else {
            out.push(None);
            continue;
        };
        let reshaped: Vec<TableName> = p
            .reshaped_tables()
            .into_iter()
            .map(|t| tables[pi][t].clone())
            .collect();
        out.push(Some(
            match crate::state::shapes::already_applied(client, &p.name, &file.hash(), &reshaped)
                .await?
            {
                Some(run) => Planned::AlreadyApplied(run),
                None => Planned::Applies(Vec::new()),
            },
        ));
    }
    Ok(out)
}

/// Inside the clone transaction: runs each selected projection's reshape on its `_rebuild`
/// clones (`tables`, in config order per projection) and records what it did with the run.
/// Projections whose shape is already live (`skip`) keep the LIKE clone.
pub async fn apply_to_clones(
    client: &tokio_postgres::Client,
    config: &crate::model::config::Config,
    run_id: i64,
    tables: &[crate::state::runs::RunTable],
    skip: &std::collections::BTreeSet<String>,
) -> crate::error::Result<()> {
    let clones: Vec<TableName> = tables.iter().map(|t| t.rebuild.clone()).collect();
    let mut done = std::collections::BTreeSet::new();
    for t in tables {
        let Some(pi) = config.projection_index(&t.projection) else {
            continue;
        };
        let p = &config.projections[pi];
        let Some(file) = &p.reshape else { continue };
        if skip.contains(&p.name) || !done.insert(p.name.clone()) {
            continue;
        }
        // One copy per table the reshape applies to, in that order (those under `create` are
        // left to their definition); matched by name, whatever order the run lists them in.
        let kept = p.reshaped_tables();
        let copies: Vec<apply::Copy> = kept
            .iter()
            .filter_map(|&t| {
                tables.iter().find(|o| {
                    o.projection == p.name
                        && o.live.name == p.tables[t].table.name
                        && p.tables[t]
                            .table
                            .schema
                            .as_ref()
                            .is_none_or(|s| *s == o.live.schema)
                })
            })
            .map(|o| apply::Copy {
                live: o.live.clone(),
                copy: o.rebuild.clone(),
            })
            .collect();
        let applied = apply::apply(client, &p.name, file, &copies, &clones, |w| {
            config
                .owner_of(w)
                .ok()
                .filter(|o| o.projection == pi)
                .and_then(|o| kept.iter().position(|&t| t == o.table))
        })
        .await?;
        crate::state::shapes::record(client, run_id, &p.name, &file.source, &applied).await?;
    }
    Ok(())
}

/// The selected projections whose declared shape is already live, with the run that put it
/// in place.
pub fn already_applied(
    config: &crate::model::config::Config,
    resolved: &crate::model::Resolved,
    order: &[usize],
) -> std::collections::BTreeMap<String, i64> {
    order
        .iter()
        .filter_map(|&i| match resolved.shapes.get(i) {
            Some(Some(Planned::AlreadyApplied(run))) => {
                Some((config.projections[i].name.clone(), *run))
            }
            _ => None,
        })
        .collect()
}

/// Refuses a partial rebuild (`--streams`, `--from-position`, …) of a projection that declares
/// a reshape or a new table (`create`): a partial rebuild copies the rows it keeps from the
/// live table, whose shape is the old one, or which does not exist yet.
pub fn refuse_partial(
    config: &crate::model::config::Config,
    order: &[usize],
) -> crate::error::Result<()> {
    for &i in order {
        let p = &config.projections[i];
        if let Some(def) = p.create.first() {
            return Err(crate::error::Error::config(format!(
                "projection `{}` declares `create` for `{}`: a partial rebuild (--streams, --streams-where, --from-position, --from-time) copies the rows it keeps from the live tables, and a new table has none",
                p.name, def.table
            ))
            .with_hint("rebuild the projection in full to add the table; once it is live, remove it from `create`"));
        }
        if let Some(file) = &p.reshape {
            return Err(crate::error::Error::config(format!(
                "projection `{}` declares `reshape = \"{}\"`: a partial rebuild (--streams, --streams-where, --from-position, --from-time) copies the rows it keeps from the live table, which has the old shape",
                p.name,
                file.path.display()
            ))
            .with_hint("rebuild the projection in full to change its shape; once the new shape is live, remove `reshape` from the config"));
        }
    }
    Ok(())
}

/// Refuses to resume run `run_id` when a projection's `reshape` is no longer the one the run
/// applied to its clones (changed, added or removed since): catching up would write tables of
/// one shape with handlers written for another.
pub async fn check_resume(
    client: &impl tokio_postgres::GenericClient,
    config: &crate::model::config::Config,
    resolved: &crate::model::Resolved,
    run_id: i64,
    names: &[String],
) -> crate::error::Result<()> {
    let recorded = crate::state::shapes::of_run(client, run_id).await?;
    for name in names {
        let Some(i) = config.projection_index(name) else {
            continue;
        };
        let was = recorded
            .iter()
            .find(|r| &r.projection == name)
            .map(|r| r.ddl_hash.clone());
        let now = match (&config.projections[i].reshape, &resolved.shapes[i]) {
            // Already in place before the run: its clones kept the live shape.
            (Some(_), Some(Planned::AlreadyApplied(_))) | (None, _) => None,
            (Some(file), _) => Some(file.hash()),
        };
        if was != now {
            return Err(crate::error::Error::config(format!(
                "the `reshape` of projection `{name}` changed since run {run_id} built its tables ({}); catching up would write tables of one shape with handlers of another",
                match (&was, &now) {
                    (Some(_), Some(_)) => "the file's text differs",
                    (Some(_), None) => "the config no longer declares it",
                    _ => "the run built them without it",
                }
            ))
            .with_hint("run `reproject rebuild` again (without --resume)"));
        }
    }
    Ok(())
}

/// Refuses to keep live (`reproject run`) a projection whose declared shape is not live yet:
/// its handlers write the new shape, and the live tables still have the old one.
pub fn refuse_pending(
    config: &crate::model::config::Config,
    resolved: &crate::model::Resolved,
    order: &[usize],
) -> crate::error::Result<()> {
    for &i in order {
        let p = &config.projections[i];
        if let Some(new) = resolved.tables[i].iter().find(|t| resolved.is_added(t)) {
            return Err(crate::error::Error::config(format!(
                "projection `{}` lists `{new}`, which does not exist yet (`create`): its handlers write the tables the next rebuild makes",
                p.name
            ))
            .with_hint("rebuild the projection (`reproject rebuild`) to create it, then run it"));
        }
        if let Some(Some(Planned::Applies(_))) = resolved.shapes.get(i) {
            return Err(crate::error::Error::config(format!(
                "projection `{}` declares `reshape` (`{}`), and its live tables do not have that shape yet: its handlers write the new shape",
                p.name,
                p.reshape.as_ref().map_or(String::new(), |f| f.path.display().to_string())
            ))
            .with_hint("rebuild the projection (`reproject rebuild`) to put the new shape in place, then run it"));
        }
    }
    Ok(())
}

/// The column changes the projections in `order` declare and will apply (not those already
/// live), as read on the reshaped stand-ins during validation.
pub fn planned_changes(
    config: &crate::model::config::Config,
    resolved: &crate::model::Resolved,
    order: &[usize],
) -> Vec<ShapeChange> {
    order
        .iter()
        .filter_map(|&pi| match &resolved.shapes[pi] {
            Some(Planned::Applies(applied)) => Some(
                applied
                    .iter()
                    .map(|a| a.shape_change(&config.projections[pi].name))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .filter(|c| !c.columns.is_empty())
        .collect()
}
