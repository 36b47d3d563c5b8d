//! An in-memory [`BlockStore`] for the unit tests, with hooks: hold writes until released, slow some writes, fail
//! writes at one offset, and record how many writes had completed when each flush began.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;

use crate::mirror::store::{BlockStore, StoreError, WriteBuf, check_range};

#[derive(Default)]
pub struct MemStore {
    pub data: Mutex<Vec<u8>>,
    /// When set, every write waits for one permit.
    pub hold: Option<Arc<Semaphore>>,
    /// Writes at offset 0 sleep this long first.
    pub slow_at_zero: Option<Duration>,
    pub fail_at: Option<u64>,
    pub done: AtomicUsize,
    pub flushes: Mutex<Vec<usize>>,
}

impl MemStore {
    pub fn new(size: usize) -> Self {
        MemStore { data: Mutex::new(vec![0; size]), ..Default::default() }
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.data.lock().expect("lock").clone()
    }

    async fn before_write(&self, offset: u64) -> Result<(), StoreError> {
        if let Some(hold) = &self.hold {
            hold.acquire().await.expect("hold").forget();
        }
        if offset == 0
            && let Some(d) = self.slow_at_zero
        {
            tokio::time::sleep(d).await;
        }
        if self.fail_at == Some(offset) {
            return Err(StoreError::Io { op: "write", offset, source: std::io::Error::other("injected") });
        }
        Ok(())
    }

    fn fill(&self, offset: u64, bytes: &[u8]) {
        let mut d = self.data.lock().expect("lock");
        d[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
        self.done.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl BlockStore for MemStore {
    fn size(&self) -> u64 {
        self.data.lock().expect("lock").len() as u64
    }

    async fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, StoreError> {
        check_range("read", offset, u64::from(len), self.size())?;
        Ok(self.data.lock().expect("lock")[offset as usize..offset as usize + len as usize].to_vec())
    }

    async fn write_at(&self, offset: u64, data: WriteBuf, _fua: bool) -> Result<(), StoreError> {
        check_range("write", offset, data.len() as u64, self.size())?;
        self.before_write(offset).await?;
        self.fill(offset, &data);
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.flushes.lock().expect("lock").push(self.done.load(Ordering::SeqCst));
        Ok(())
    }

    async fn trim(&self, offset: u64, len: u64) -> Result<(), StoreError> {
        check_range("trim", offset, len, self.size())
    }

    async fn write_zeroes(&self, offset: u64, len: u64, _fua: bool) -> Result<(), StoreError> {
        check_range("write_zeroes", offset, len, self.size())?;
        self.before_write(offset).await?;
        self.fill(offset, &vec![0; len as usize]);
        Ok(())
    }
}
