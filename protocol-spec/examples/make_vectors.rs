//! Writes `vectors/*.json` from the deterministic generator: `cargo run -p voicechat-protocol --example make_vectors`.

#[path = "../tests/it/generator.rs"]
mod generator;

fn main() -> std::io::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors");
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            std::fs::remove_file(path)?;
        }
    }
    let vectors = generator::vectors();
    for (name, value) in &vectors {
        let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)? + "\n";
        std::fs::write(dir.join(format!("{name}.json")), text)?;
    }
    println!("wrote {} vectors to {}", vectors.len(), dir.display());
    Ok(())
}
