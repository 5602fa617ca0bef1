//! Compiled components cached on disk, keyed by the wasm's sha256 and the engine's
//! compatibility hash: loading one takes well under a millisecond, compiling one a hundred.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// The on-disk cache of compiled components. Only files it wrote itself are deserialized: the
/// folder is created private to the agent's user and entries are written atomically.
pub(crate) struct ComponentCache {
    dir: Option<PathBuf>,
    engine_key: String,
}

impl ComponentCache {
    /// A cache in `dir`; without a usable folder, components are compiled on every start.
    pub(crate) fn new(engine: &Engine, dir: &Path) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        let engine_key = format!("{:016x}", hasher.finish());
        let dir = match create_private_dir(dir) {
            Ok(()) => Some(dir.to_path_buf()),
            Err(e) => {
                tracing::warn!(
                    "plugin cache {} is not usable ({e}); plugins will be compiled on every start",
                    dir.display()
                );
                None
            }
        };
        ComponentCache { dir, engine_key }
    }

    /// The compiled component for `wasm` (whose hex sha256 is `sha256`).
    pub(crate) fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        sha256: &str,
    ) -> wasmtime::Result<Component> {
        let Some(dir) = &self.dir else {
            return Component::new(engine, wasm);
        };
        let path = dir.join(format!("{sha256}-{}.cwasm", self.engine_key));
        if path.is_file() {
            // SAFETY: the file is in the agent's private cache folder, named by the digest of the
            // wasm it was compiled from and the engine that compiled it, and was written whole by
            // `store` below; wasmtime also checks the engine compatibility header.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!("discarding unusable cache entry {}: {e}", path.display()),
            }
        }
        let component = Component::new(engine, wasm)?;
        if let Err(e) = store(dir, &path, &component) {
            tracing::warn!("cannot write plugin cache entry {}: {e}", path.display());
        }
        Ok(component)
    }
}

fn store(dir: &Path, path: &Path, component: &Component) -> std::io::Result<()> {
    let bytes = component
        .serialize()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}
