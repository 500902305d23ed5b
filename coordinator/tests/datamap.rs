//! The data map: PNG/SVG output, size, colours, legend, determinism, scale,
//! and the metrics-file reader's errors.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use carto_coordinator::datamap::{image_size, render_png, render_rgb, render_svg, MapData, MapStyle};
use parquet::arrow::ArrowWriter;

/// A small deterministic generator (64-bit LCG), so tests need no crate.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` samples over `labels` classes, `e` epochs, shaped like a real map:
/// confident samples are mostly correct, and every count 0..=e occurs.
fn synthetic(n: usize, labels: i64, e: i32, names: bool) -> MapData {
    let mut rng = Lcg(7);
    let mut d = MapData {
        confidence: Vec::with_capacity(n),
        variability: Vec::with_capacity(n),
        correct_count: Vec::with_capacity(n),
        epochs: vec![e; n],
        labels: Vec::with_capacity(n),
        label_names: names.then(|| (0..labels).map(|l| format!("class-{l}")).collect()),
        title: "synthetic test map".into(),
    };
    for i in 0..n {
        let c = rng.next();
        let v = (0.45 * (c * (1.0 - c)) * 2.0 * (0.5 + rng.next())).min(0.49);
        let k = if i < 2 * (e as usize + 1) {
            (i % (e as usize + 1)) as i32 // every count at least twice
        } else {
            ((c * e as f64) + (rng.next() - 0.5) * 1.5).round().clamp(0.0, e as f64) as i32
        };
        d.confidence.push(c);
        d.variability.push(v);
        d.correct_count.push(k);
        d.labels.push((i as i64 * 7 + (rng.next() * 3.0) as i64) % labels);
    }
    d
}

fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 33, "PNG too short: {} bytes", bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk is IHDR");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (w, h)
}

#[test]
fn png_has_the_documented_size() {
    let d = synthetic(300, 2, 5, true);
    let style = MapStyle::default();
    assert_eq!(style.width, 1600);
    assert_eq!(style.density_threshold, 100_000);
    // Documented: 1600 × 1702 for 2 labels, × 1487 for 3, × 3000 for 24.
    assert_eq!(image_size(&d, &style), (1600, 1702));
    assert_eq!(image_size(&synthetic(300, 1, 5, false), &style), (1600, 1702));
    assert_eq!(image_size(&synthetic(300, 3, 5, false), &style), (1600, 1487));
    assert_eq!(image_size(&synthetic(300, 24, 5, false), &style), (1600, 3000));
    assert_eq!(image_size(&synthetic(300, 40, 5, false), &style), (1600, 3000));
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("datamap.png");
    render_png(&d, &style, &png).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(png_size(&bytes), image_size(&d, &style));
    // Nothing left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");

    // Another width and more panels: still what image_size says.
    let d6 = synthetic(300, 6, 5, false);
    for (asked, got) in [(2000, 2000), (1000, 1200)] {
        let other = MapStyle {
            width: asked,
            ..MapStyle::default()
        };
        render_png(&d6, &other, &png).unwrap();
        let (w, h) = png_size(&std::fs::read(&png).unwrap());
        assert_eq!((w, h), image_size(&d6, &other));
        assert_eq!(w, got, "widths below the documented minimum are raised to it");
    }
    // Extensions other than .png still give a PNG.
    let odd = dir.path().join("map.out");
    render_png(&d, &style, &odd).unwrap();
    assert_eq!(png_size(&std::fs::read(&odd).unwrap()), image_size(&d, &style));
}

#[test]
fn rgb_has_the_palette_colours_in_the_main_panel() {
    let d = synthetic(300, 2, 5, true);
    let style = MapStyle::default();
    let (w, h, px) = render_rgb(&d, &style).unwrap();
    assert_eq!((w, h), image_size(&d, &style));
    assert_eq!(px.len(), (w * h * 3) as usize);
    // The all-labels panel: x 24..1024, y 130..990 at the default width.
    // Count saturated colours only (text and grid lines are grey).
    let mut colours = HashSet::new();
    for y in 130..990u32 {
        for x in 24..1024u32 {
            let i = ((y * w + x) * 3) as usize;
            let (r, g, b) = (px[i], px[i + 1], px[i + 2]);
            let chroma = r.max(g).max(b) - r.min(g).min(b);
            if chroma > 40 {
                colours.insert((r, g, b));
            }
        }
    }
    println!("distinct saturated colours in the main panel: {}", colours.len());
    assert!(colours.len() >= 6, "only {} distinct colours", colours.len());
    // A blank map (all white) would fail the above; so would one colour for all.
    let mut one = d.clone();
    one.correct_count.iter_mut().for_each(|k| *k = 5);
    let (_, _, px1) = render_rgb(&one, &style).unwrap();
    assert_ne!(px, px1, "colour must depend on correctness");
}

#[test]
fn svg_has_axis_labels_legend_regions_and_panels() {
    let d = synthetic(300, 2, 5, true);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("datamap.svg");
    render_svg(&d, &MapStyle::default(), &path).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
    let (w, h) = image_size(&d, &MapStyle::default());
    assert!(svg.contains(&format!("width=\"{w}\"")) && svg.contains(&format!("height=\"{h}\"")));
    for text in [
        "variability",
        "confidence",
        "correctness",
        "synthetic test map",
        "300 samples",
        "all labels (300 samples)",
        "easy-to-learn",
        "ambiguous",
        "hard-to-learn",
    ] {
        assert!(svg.contains(text), "SVG lacks {text:?}");
    }
    for k in 0..=5 {
        let entry = format!("correct in {k}/5 epochs");
        assert!(svg.contains(&entry), "SVG lacks legend entry {entry:?}");
    }
    for l in 0..2 {
        assert!(
            svg.contains(&format!("class-{l} (")),
            "SVG lacks the panel of class-{l}"
        );
    }
    // 300 points in the main panel plus 300 in the label panels.
    let circles = svg.matches("<circle").count();
    assert_eq!(circles, 600, "every point drawn once per panel");
}

#[test]
fn many_labels_show_the_largest_and_say_so() {
    let d = synthetic(3000, 30, 4, false);
    let style = MapStyle::default();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("datamap.svg");
    render_svg(&d, &style, &path).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(
        svg.contains("24 of 30 labels shown"),
        "the figure must say labels were left out"
    );
    assert!(svg.contains("3,000 samples"), "counts have thousands separators");
    assert!(svg.contains("label 0 ("), "unnamed labels are 'label k'");
    // 24 panels: 4 columns × 6 rows.
    let d24 = synthetic(3000, 24, 4, false);
    assert_eq!(image_size(&d, &style), image_size(&d24, &style));
    assert!(image_size(&d, &style).1 > image_size(&synthetic(3000, 4, 4, false), &style).1);
    // E = 4: five legend entries.
    assert!(svg.contains("correct in 4/4 epochs") && svg.contains("correct in 0/4 epochs"));
    let png = dir.path().join("datamap.png");
    render_png(&d, &style, &png).unwrap();
    assert_eq!(png_size(&std::fs::read(&png).unwrap()), image_size(&d, &style));
}

#[test]
fn many_epochs_get_a_colour_bar() {
    let d = synthetic(500, 3, 20, true);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("datamap.svg");
    render_svg(&d, &MapStyle::default(), &path).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.contains("correct in k/20 epochs"));
    assert!(svg.contains("0/20") && svg.contains("20/20"));
}

#[test]
fn rendering_is_deterministic() {
    let d = synthetic(400, 2, 5, true);
    let style = MapStyle::default();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
    render_png(&d, &style, &a).unwrap();
    render_png(&d, &style, &b).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let (a, b) = (dir.path().join("a.svg"), dir.path().join("b.svg"));
    render_svg(&d, &style, &a).unwrap();
    render_svg(&d, &style, &b).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // The density path too.
    let dense = MapStyle {
        density_threshold: 50,
        ..MapStyle::default()
    };
    let (a, b) = (dir.path().join("c.png"), dir.path().join("d.png"));
    render_png(&d, &dense, &a).unwrap();
    render_png(&d, &dense, &b).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_ne!(
        std::fs::read(&a).unwrap(),
        std::fs::read(dir.path().join("a.png")).unwrap()
    );
}

#[test]
fn density_mode_draws_bins_not_points() {
    let d = synthetic(400, 2, 5, true);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("datamap.svg");
    render_svg(
        &d,
        &MapStyle {
            density_threshold: 100,
            ..MapStyle::default()
        },
        &path,
    )
    .unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert_eq!(svg.matches("<circle").count(), 0);
    assert!(svg.contains("2-D histograms"), "the figure must say it shows bins");
    assert!(svg.contains("No point is dropped"));
}

#[test]
fn a_million_points_render_quickly() {
    let d = synthetic(1_000_000, 3, 5, true);
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("datamap.png");
    let t = Instant::now();
    render_png(&d, &MapStyle::default(), &png).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let bytes = std::fs::read(&png).unwrap();
    println!("1,000,000 points: PNG in {secs:.2} s, {} bytes", bytes.len());
    assert_eq!(png_size(&bytes), image_size(&d, &MapStyle::default()));
    assert!(secs < 20.0, "took {secs:.1} s");
    let svg = dir.path().join("datamap.svg");
    let t = Instant::now();
    render_svg(&d, &MapStyle::default(), &svg).unwrap();
    let len = std::fs::metadata(&svg).unwrap().len();
    println!(
        "1,000,000 points: SVG in {:.2} s, {len} bytes",
        t.elapsed().as_secs_f64()
    );
    assert!(len < 20_000_000, "SVG of {len} bytes");
}

fn write_parquet(path: &Path, cols: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn metrics_file_is_read_and_bad_files_name_the_column() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("metrics.parquet");
    let full = |skip: &str| -> Vec<(&'static str, ArrayRef)> {
        let cols: Vec<(&'static str, ArrayRef)> = vec![
            ("sample_id", Arc::new(Int64Array::from(vec![0, 1, 2, 3]))),
            ("label", Arc::new(Int64Array::from(vec![0, 1, 1, 0]))),
            (
                "label_name",
                Arc::new(StringArray::from(vec!["neg", "pos", "pos", "neg"])),
            ),
            ("epochs", Arc::new(Int32Array::from(vec![3, 3, 3, 3]))),
            ("confidence", Arc::new(Float64Array::from(vec![0.9, 0.2, 0.5, 0.7]))),
            ("variability", Arc::new(Float64Array::from(vec![0.05, 0.1, 0.3, 0.2]))),
            ("correct_count", Arc::new(Int32Array::from(vec![3, 0, 1, 2]))),
        ];
        cols.into_iter().filter(|(n, _)| *n != skip).collect()
    };
    write_parquet(&good, full(""));
    let d = MapData::from_metrics_file(&good).unwrap();
    assert_eq!(d.confidence, vec![0.9, 0.2, 0.5, 0.7]);
    assert_eq!(d.correct_count, vec![3, 0, 1, 2]);
    assert_eq!(d.labels, vec![0, 1, 1, 0]);
    assert_eq!(d.label_names, Some(vec!["neg".to_string(), "pos".to_string()]));
    render_png(&d, &MapStyle::default(), &dir.path().join("tiny.png")).unwrap();

    for missing in ["confidence", "variability", "correct_count", "epochs", "label"] {
        let bad = dir.path().join(format!("no-{missing}.parquet"));
        write_parquet(&bad, full(missing));
        let err = MapData::from_metrics_file(&bad).unwrap_err();
        let msg = err.to_string();
        println!("{msg}");
        assert!(matches!(err, carto_common::CartoError::InvalidInput(_)), "{err:?}");
        assert!(
            msg.contains(&format!("'{missing}'")),
            "error must name the column: {msg}"
        );
        assert!(
            msg.contains(&format!("no-{missing}.parquet")),
            "error must name the file: {msg}"
        );
        assert!(!msg.contains('\n'), "one line: {msg}");
    }
    // A wrongly typed column.
    let bad = dir.path().join("typed.parquet");
    let mut cols = full("confidence");
    cols.push(("confidence", Arc::new(StringArray::from(vec!["a", "b", "c", "d"]))));
    write_parquet(&bad, cols);
    let msg = MapData::from_metrics_file(&bad).unwrap_err().to_string();
    assert!(msg.contains("'confidence'"), "{msg}");
    // Not Parquet.
    let junk = dir.path().join("junk.parquet");
    std::fs::write(&junk, b"not parquet").unwrap();
    let msg = MapData::from_metrics_file(&junk).unwrap_err().to_string();
    assert!(msg.contains("junk.parquet"), "{msg}");
}

#[test]
fn inconsistent_data_is_an_error_not_a_panic() {
    let mut d = synthetic(50, 2, 5, true);
    d.variability.pop();
    assert!(render_rgb(&d, &MapStyle::default()).is_err());
    let mut d = synthetic(50, 2, 5, true);
    d.confidence[3] = f64::NAN;
    assert!(render_rgb(&d, &MapStyle::default())
        .unwrap_err()
        .to_string()
        .contains("confidence"));
    let empty = MapData {
        confidence: vec![],
        variability: vec![],
        correct_count: vec![],
        epochs: vec![],
        labels: vec![],
        label_names: None,
        title: "empty".into(),
    };
    assert!(render_rgb(&empty, &MapStyle::default()).is_err());
}
