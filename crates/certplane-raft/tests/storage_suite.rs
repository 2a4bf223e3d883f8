//! openraft's storage conformance suite against certplane's RocksDB log store and state machine.

use certplane_raft::db::open_db;
use certplane_raft::log_store::RocksLogStore;
use certplane_raft::sm_store::StateMachineStore;
use certplane_raft::TypeConfig;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::StorageError;

struct RocksBuilder;

fn storage_error(e: std::io::Error) -> StorageError<TypeConfig> {
    StorageError::read(TypeConfig::err_from_error(&e))
}

impl StoreBuilder<TypeConfig, RocksLogStore, StateMachineStore, tempfile::TempDir>
    for RocksBuilder
{
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, RocksLogStore, StateMachineStore), StorageError<TypeConfig>>
    {
        let dir = tempfile::tempdir().map_err(storage_error)?;
        let db = open_db(&dir.path().join("db")).map_err(storage_error)?;
        let log = RocksLogStore::new(db.clone()).map_err(storage_error)?;
        let sm =
            StateMachineStore::open(db, &dir.path().join("snapshots")).map_err(storage_error)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocks_store_passes_openraft_conformance_suite() {
    Suite::test_all(RocksBuilder)
        .await
        .expect("storage conformance");
}
