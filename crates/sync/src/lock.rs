//! Taking a std lock without ever reading past a panic's poison.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A lock whose holder panicked: its data may be half updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a thread panicked while holding the lock on {data}")]
pub struct PoisonedLock {
    /// The type of the data behind the lock, to say which lock it was.
    pub data: &'static str,
}

impl PoisonedLock {
    /// The error for a lock on data of type `T`.
    pub fn of<T: ?Sized>() -> Self {
        Self {
            data: std::any::type_name::<T>(),
        }
    }

    /// Raise the panic again, in this thread, for a reader that has no
    /// error to return (`lock(m).unwrap_or_else(PoisonedLock::reraise)`):
    /// it stops there instead of reading what the first panic left half
    /// updated. Code that can return an error converts this one instead.
    #[track_caller]
    pub fn reraise<G>(self) -> G {
        panic!("{self}")
    }
}

/// Lock a mutex; an error if a panic poisoned it.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, PoisonedLock> {
    m.lock().map_err(|_| PoisonedLock::of::<T>())
}

/// Read-lock an RwLock; an error if a panic poisoned it.
pub fn read<T: ?Sized>(m: &RwLock<T>) -> Result<RwLockReadGuard<'_, T>, PoisonedLock> {
    m.read().map_err(|_| PoisonedLock::of::<T>())
}

/// Write-lock an RwLock; an error if a panic poisoned it.
pub fn write<T: ?Sized>(m: &RwLock<T>) -> Result<RwLockWriteGuard<'_, T>, PoisonedLock> {
    m.write().map_err(|_| PoisonedLock::of::<T>())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, RwLock};

    use super::*;

    #[test]
    fn a_lock_poisoned_by_a_panic_is_an_error_naming_its_data() {
        let m = Arc::new(Mutex::new(1u32));
        let rw = Arc::new(RwLock::new(String::new()));
        assert_eq!(lock(&m).map(|g| *g), Ok(1));
        let (m2, rw2) = (m.clone(), rw.clone());
        let joined = std::thread::spawn(move || {
            let _m = lock(&m2);
            let _rw = write(&rw2);
            panic!("while holding both");
        })
        .join();
        assert!(joined.is_err());
        assert_eq!(lock(&m).err(), Some(PoisonedLock { data: "u32" }));
        let err = read(&rw).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("a thread panicked while holding the lock on alloc::string::String")
        );
        assert!(write(&rw).is_err());
    }

    #[test]
    fn reraise_panics_with_the_lock_named() {
        let raised = std::panic::catch_unwind(|| -> u8 { PoisonedLock { data: "u8" }.reraise() });
        let message = raised
            .err()
            .and_then(|p| p.downcast_ref::<String>().cloned());
        assert_eq!(
            message.as_deref(),
            Some("a thread panicked while holding the lock on u8")
        );
    }
}
