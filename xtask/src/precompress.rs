//! Compressed copies of the dashboard's files, written next to them in
//! `dist/` after `trunk build`: `app.wasm.br` and `app.wasm.gz` beside
//! `app.wasm`. The node serves the copy the browser accepts
//! (`backend/src/web/assets.rs`), so the 1.2 MB wasm crosses the network
//! at about a third of that, compressed once at build time at the highest
//! levels instead of on every request.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Extensions worth compressing (text and wasm; images are compressed
/// already).
const COMPRESSIBLE: [&str; 5] = ["wasm", "js", "css", "html", "svg"];

/// One file's sizes: raw, brotli, gzip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizes {
    pub file: PathBuf,
    pub raw: usize,
    pub br: usize,
    pub gz: usize,
}

/// Brotli at quality 11 (the densest), the window sized for the file.
pub fn brotli(data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() / 3);
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 64 * 1024, 11, 22);
        w.write_all(data)?;
        w.flush()?;
    }
    Ok(out)
}

/// Gzip at level 9, for browsers and tools that do not take brotli.
pub fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

/// Writes `bytes` to `path` whole or not at all (a temporary file renamed
/// over it), so a node serving `dir` meanwhile never sends half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// Writes `.br` and `.gz` beside every compressible file of `dir` (not
/// into subdirectories: Trunk's output is flat), replacing older copies.
/// Returns the sizes, in file name order.
pub fn precompress(dir: &Path) -> Result<Vec<Sizes>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| COMPRESSIBLE.contains(&e))
        })
        .collect();
    files.sort();
    let mut sizes = Vec::with_capacity(files.len());
    for f in files {
        let data = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
        let br = brotli(&data)?;
        let gz = gzip(&data)?;
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        write_atomic(&f.with_file_name(format!("{name}.br")), &br)?;
        write_atomic(&f.with_file_name(format!("{name}.gz")), &gz)?;
        sizes.push(Sizes {
            file: f.clone(),
            raw: data.len(),
            br: br.len(),
            gz: gz.len(),
        });
    }
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn copies_decompress_to_the_original_and_only_text_and_wasm_get_them() {
        let dir = tempfile::tempdir().unwrap();
        // Compressible but not trivially: a few distinct lines repeated.
        let js: Vec<u8> = (0..5000)
            .flat_map(|i| format!("export const v{i} = {};\n", i * 7919 % 1000).into_bytes())
            .collect();
        std::fs::write(dir.path().join("app-0123456789abcdef.js"), &js).unwrap();
        std::fs::write(dir.path().join("logo.png"), b"\x89PNG....").unwrap();
        std::fs::write(dir.path().join("index.html"), b"").unwrap();

        let sizes = precompress(dir.path()).unwrap();
        let names: Vec<String> = sizes
            .iter()
            .map(|s| s.file.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["app-0123456789abcdef.js", "index.html"]);
        assert!(!dir.path().join("logo.png.gz").exists());
        assert!(sizes[0].br < js.len() / 4 && sizes[0].gz < js.len() / 4);

        let br = std::fs::read(dir.path().join("app-0123456789abcdef.js.br")).unwrap();
        let mut out = Vec::new();
        brotli::Decompressor::new(&br[..], 4096)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, js);
        let gz = std::fs::read(dir.path().join("app-0123456789abcdef.js.gz")).unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, js);
        // An empty file still gets (valid, empty) copies.
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&std::fs::read(dir.path().join("index.html.gz")).unwrap()[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
        // Nothing temporary is left, and a second run replaces the copies.
        let again = precompress(dir.path()).unwrap();
        assert_eq!(again, sizes);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty());
    }
}
