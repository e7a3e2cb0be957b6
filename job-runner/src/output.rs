//! The deliverables under `--output`: the CSV of principal components (and its Parquet
//! dataset on request), the model, the summary, the list of skipped inputs and the report
//! with its two figures.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::ModelInfo;
use crate::pca::Pca;
use crate::storage::{Composed, Location};
use crate::work::Skipped;

pub const FEATURES_CSV: &str = "features_pca.csv";
pub const MODEL_JSON: &str = "pca_model.json";
pub const SUMMARY_JSON: &str = "summary.json";
pub const ERRORS_CSV: &str = "errors.csv";
/// One self-contained page about the run, with the two figures inline.
pub const REPORT_HTML: &str = "report.html";
pub const SCREE_PNG: &str = "scree.png";
pub const SCATTER_PNG: &str = "pc_scatter.png";
/// A folder of `part-NNNNN.parquet` files, one per shard: how Spark, DuckDB and pandas
/// read a dataset.
pub const FEATURES_PARQUET: &str = "features_pca.parquet";

/// Rows per Parquet row group: large enough for readers' scans, small enough that a reader
/// holds one in memory (65,536 rows at k = 247 is about 65 MB before compression).
const PARQUET_ROW_GROUP_ROWS: usize = 65_536;

/// Shard `shard`'s part of the Parquet dataset, relative to the output.
pub fn parquet_part(shard: usize) -> String {
    format!("{FEATURES_PARQUET}/part-{shard:05}.parquet")
}

/// URIs of everything a run delivers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outputs {
    pub features: String,
    pub model: String,
    pub summary: String,
    pub errors: String,
    /// `report.html` and its two figures (absent from summaries written before them).
    #[serde(default)]
    pub report: String,
    #[serde(default)]
    pub scree: String,
    #[serde(default)]
    pub scatter: String,
    /// The Parquet dataset (a folder of one part per shard), when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parquet: Option<String>,
}

impl Outputs {
    pub fn under(output: &Location, parquet: bool) -> Self {
        Outputs {
            features: output.join(FEATURES_CSV).to_string(),
            model: output.join(MODEL_JSON).to_string(),
            summary: output.join(SUMMARY_JSON).to_string(),
            errors: output.join(ERRORS_CSV).to_string(),
            report: output.join(REPORT_HTML).to_string(),
            scree: output.join(SCREE_PNG).to_string(),
            scatter: output.join(SCATTER_PNG).to_string(),
            parquet: parquet.then(|| output.join(FEATURES_PARQUET).to_string()),
        }
    }
}

/// One shard's rows as a Parquet file: `path` and `label` (strings, `label`
/// dictionary-encoded), `pc_1..pc_k` (float32), zstd, with `metadata` as the file's
/// key-value metadata. `components` holds `k` values per row.
pub fn parquet_rows(
    paths: &[String],
    labels: &[String],
    components: &[f64],
    k: usize,
    metadata: Vec<(String, String)>,
) -> Result<Vec<u8>, parquet::errors::ParquetError> {
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::data_type::{ByteArray, ByteArrayType, FloatType};
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use parquet::schema::types::ColumnPath;

    let mut message = String::from(
        "message features_pca { REQUIRED BYTE_ARRAY path (STRING); REQUIRED BYTE_ARRAY label (STRING);",
    );
    for c in 1..=k {
        message.push_str(&format!(" REQUIRED FLOAT pc_{c};"));
    }
    message.push_str(" }");
    let schema = Arc::new(parse_message_type(&message)?);
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        // Paths are all different and components nearly so: a dictionary only costs there.
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(ColumnPath::from("label"), true)
        .set_key_value_metadata(Some(
            metadata
                .into_iter()
                .map(|(key, value)| KeyValue::new(key, value))
                .collect(),
        ))
        .build();
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, Arc::new(properties))?;
    for start in (0..paths.len()).step_by(PARQUET_ROW_GROUP_ROWS) {
        let end = (start + PARQUET_ROW_GROUP_ROWS).min(paths.len());
        let mut group = writer.next_row_group()?;
        let mut column = 0;
        while let Some(mut column_writer) = group.next_column()? {
            match column {
                0 | 1 => {
                    let texts = if column == 0 { paths } else { labels };
                    let values: Vec<ByteArray> = texts[start..end]
                        .iter()
                        .map(|text| ByteArray::from(text.as_str()))
                        .collect();
                    column_writer
                        .typed::<ByteArrayType>()
                        .write_batch(&values, None, None)?;
                }
                pc => {
                    let values: Vec<f32> = (start..end)
                        .map(|row| components[row * k + pc - 2] as f32)
                        .collect();
                    column_writer
                        .typed::<FloatType>()
                        .write_batch(&values, None, None)?;
                }
            }
            column_writer.close()?;
            column += 1;
        }
        group.close()?;
    }
    writer.into_inner()
}

/// `pca_model.json`: everything needed to project a new photo as the others were.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelFile {
    pub feature_model: ModelInfo,
    #[serde(flatten)]
    pub pca: Pca,
}

/// Wall-clock seconds per phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub plan: f64,
    /// Sum over shards: with several pods this is pod time, not elapsed time.
    pub extract: f64,
    pub fit: f64,
    /// Sum over shards, like `extract`.
    #[serde(default)]
    pub project: f64,
    #[serde(default)]
    pub assemble: f64,
}

/// `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub input: String,
    pub output: String,
    pub images_seen: u64,
    pub images_used: u64,
    pub images_skipped: u64,
    pub shards: usize,
    pub dim: usize,
    pub k: usize,
    pub standardize: bool,
    /// Components divided by the square root of their eigenvalue.
    #[serde(default)]
    pub whiten: bool,
    pub cumulative_explained_variance: f64,
    pub seconds: Timings,
    /// Images used per second of extraction time.
    pub images_per_second: f64,
    pub outputs: Outputs,
    /// How `features_pca.csv` was put together from the shards' parts.
    #[serde(default)]
    pub assembly: Composed,
}

/// Formats `path,label,pc_1..pc_k` rows into memory, to be taken out a chunk at a time
/// ([`CsvRows::take`]) and streamed to the output.
pub struct CsvRows {
    writer: csv::Writer<Vec<u8>>,
}

impl CsvRows {
    /// A header row for `k` components.
    pub fn new(k: usize) -> Self {
        let mut writer = csv::Writer::from_writer(Vec::with_capacity(1 << 20));
        let mut header = vec!["path".to_string(), "label".to_string()];
        header.extend((1..=k).map(|i| format!("pc_{i}")));
        writer.write_record(&header).expect("writing to memory");
        CsvRows { writer }
    }

    /// No header: a part that follows another.
    pub fn headless() -> Self {
        CsvRows {
            writer: csv::Writer::from_writer(Vec::with_capacity(1 << 20)),
        }
    }

    /// One row; components are written as f32, the shortest text that reads back exactly.
    /// Paths with commas, quotes or line breaks are quoted.
    pub fn write(&mut self, path: &str, label: &str, components: &[f64]) {
        let mut record =
            csv::StringRecord::with_capacity(16 * components.len(), components.len() + 2);
        record.push_field(path);
        record.push_field(label);
        let mut number = String::new();
        for &value in components {
            number.clear();
            use std::fmt::Write as _;
            let _ = write!(number, "{}", value as f32);
            record.push_field(&number);
        }
        self.writer
            .write_record(&record)
            .expect("writing to memory");
    }

    /// The text formatted since the last call.
    pub fn take(&mut self) -> Vec<u8> {
        let fresh = csv::Writer::from_writer(Vec::with_capacity(1 << 20));
        let written = std::mem::replace(&mut self.writer, fresh);
        written.into_inner().expect("writing to memory")
    }
}

/// `errors.csv`: a `path,reason` row per skipped input (a header alone when none).
pub fn errors_csv(skipped: &[Skipped]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record(["path", "reason"])
        .expect("writing to memory");
    for item in skipped {
        writer
            .write_record([&item.path, &item.reason])
            .expect("writing to memory");
    }
    writer.into_inner().expect("writing to memory")
}
