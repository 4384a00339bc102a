//! Reference data joined into `trusted/events` (`batch.reference_joins`).
//!
//! A join rule `DATASET.COLUMN = PATH` (for example `products.sku = product.id`) looks up each
//! event's property at `PATH` (dot-separated keys into `properties`) among the `COLUMN` values of
//! the tenant's dataset `reference/DATASET/tenant=T/` (what `import --dataset` lands) and adds
//! the matching row, every column of it, as one struct column named `DATASET`. The column is
//! null when the event has no such property or no row matches; a tenant without the dataset
//! gets the column with only the key field, always null, so the table's shape follows the
//! configuration. Property values compare as text, numbers and booleans as JSON writes them
//! (as the import stores every column). Of rows sharing a key, the first one read wins.

use std::{collections::HashMap, sync::Arc};

use arrow::{
    array::{Array, ArrayRef, AsArray, RecordBatch, StructArray, UInt32Array},
    compute::{concat_batches, take},
    datatypes::{DataType, Field, Fields, Schema},
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sightline_lake::ObjectStore;

use crate::{BatchError, import::REFERENCE};

/// One `DATASET.COLUMN = PATH` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// The dataset's name, also the name of the added column.
    pub dataset: String,
    /// The dataset's key column.
    pub column: String,
    /// Keys into the event's properties.
    pub path: Vec<String>,
}

impl Join {
    /// Parses `DATASET.COLUMN = PATH`.
    pub fn parse(rule: &str) -> Result<Self, String> {
        let (left, right) = rule
            .split_once('=')
            .ok_or_else(|| format!("`{rule}` is not `DATASET.COLUMN = PROPERTY.PATH`"))?;
        let (dataset, column) = left
            .trim()
            .split_once('.')
            .ok_or_else(|| format!("`{rule}`: the left side must be `DATASET.COLUMN`"))?;
        let path: Vec<String> = right.trim().split('.').map(str::to_owned).collect();
        let named = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !named(dataset) {
            return Err(format!(
                "`{rule}`: dataset `{dataset}` must be lowercase letters, digits and `_`"
            ));
        }
        if column.trim().is_empty() || path.iter().any(|k| k.trim().is_empty()) {
            return Err(format!("`{rule}`: empty column or property key"));
        }
        Ok(Self {
            dataset: dataset.to_owned(),
            column: column.trim().to_owned(),
            path: path.iter().map(|k| k.trim().to_owned()).collect(),
        })
    }

    /// The property at [`Join::path`] of `properties_json`, as text.
    fn key_of(&self, properties_json: &[u8]) -> Option<String> {
        if properties_json.is_empty() {
            return None;
        }
        let value: serde_json::Value = serde_json::from_slice(properties_json).ok()?;
        let found = self.path.iter().try_fold(&value, |v, k| v.get(k))?;
        match found {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// A tenant's dataset of one rule, indexed by its key column.
#[derive(Debug)]
pub struct Table {
    join: Join,
    rows: RecordBatch,
    index: HashMap<String, u32>,
}

impl Table {
    fn new(join: Join, rows: RecordBatch) -> Result<Self, BatchError> {
        let keys = rows
            .column_by_name(&join.column)
            .ok_or_else(|| {
                BatchError::Invalid(format!(
                    "reference dataset `{}` has no column `{}`",
                    join.dataset, join.column
                ))
            })?
            .as_string_opt::<i32>()
            .ok_or_else(|| {
                BatchError::Invalid(format!("`{}.{}` is not text", join.dataset, join.column))
            })?;
        let mut index = HashMap::with_capacity(keys.len());
        for (row, key) in keys.iter().enumerate() {
            if let Some(key) = key {
                index.entry(key.to_owned()).or_insert(row as u32);
            }
        }
        Ok(Self { join, rows, index })
    }

    /// The struct column for events with these `properties`.
    pub fn column<'a>(
        &self,
        properties: impl Iterator<Item = &'a [u8]>,
    ) -> Result<(Field, ArrayRef), BatchError> {
        let indices: UInt32Array = properties
            .map(|p| {
                self.join
                    .key_of(p)
                    .and_then(|k| self.index.get(&k).copied())
            })
            .collect();
        let fields: Fields = self.rows.schema().fields().clone();
        let columns = self
            .rows
            .columns()
            .iter()
            .map(|c| take(c, &indices, None))
            .collect::<Result<Vec<_>, _>>()?;
        let array = StructArray::try_new(fields.clone(), columns, indices.nulls().cloned())?;
        let field = Field::new(&self.join.dataset, DataType::Struct(fields), true);
        Ok((field, Arc::new(array)))
    }
}

/// The tenant's datasets of `joins`, read from the lake.
pub async fn load(
    lake: &dyn ObjectStore,
    tenant_id: i64,
    joins: &[Join],
) -> Result<Vec<Table>, BatchError> {
    let mut tables = Vec::with_capacity(joins.len());
    for join in joins {
        let prefix = format!("{REFERENCE}/{}/tenant={tenant_id}/", join.dataset);
        let mut batches = Vec::new();
        for key in lake.list(&prefix).await? {
            if !key.ends_with(".parquet") {
                continue;
            }
            let reader =
                ParquetRecordBatchReaderBuilder::try_new(lake.get(&key).await?)?.build()?;
            for batch in reader {
                batches.push(batch?);
            }
        }
        let rows = match batches.first() {
            Some(first) => concat_batches(&first.schema(), &batches)?,
            // No dataset yet: the key alone, so the column exists (and stays null).
            None => RecordBatch::new_empty(Arc::new(Schema::new(vec![Field::new(
                &join.column,
                DataType::Utf8,
                true,
            )]))),
        };
        tables.push(Table::new(join.clone(), rows)?);
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use arrow::array::StringArray;

    use super::*;

    #[test]
    fn rules_parse_and_bad_ones_say_why() {
        let join = Join::parse(" products.sku = product.id ").unwrap();
        assert_eq!(join.dataset, "products");
        assert_eq!(join.column, "sku");
        assert_eq!(join.path, ["product", "id"]);
        for bad in [
            "products.sku",
            "products = sku",
            "Prod.sku = x",
            "p.sku = a..b",
        ] {
            assert!(Join::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_get_the_matching_row_or_null() {
        let rows = RecordBatch::try_from_iter([
            (
                "sku",
                Arc::new(StringArray::from(vec!["a", "7", "a"])) as ArrayRef,
            ),
            (
                "name",
                Arc::new(StringArray::from(vec!["Mug", "Lamp", "Other"])) as ArrayRef,
            ),
        ])
        .unwrap();
        let table = Table::new(Join::parse("products.sku = item.sku").unwrap(), rows).unwrap();
        let events: [&[u8]; 4] = [
            br#"{"item": {"sku": "a"}}"#,
            br#"{"item": {"sku": 7}}"#,
            br#"{"item": {"sku": "zz"}}"#,
            b"",
        ];
        let (field, column) = table.column(events.into_iter()).unwrap();
        assert_eq!(field.name(), "products");
        let column = column.as_struct();
        let names = column.column_by_name("name").unwrap().as_string::<i32>();
        let got: Vec<Option<&str>> = (0..4)
            .map(|i| column.is_valid(i).then(|| names.value(i)))
            .collect();
        assert_eq!(got, [Some("Mug"), Some("Lamp"), None, None]);
    }
}
