//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Foundation

/// A path for a throwaway SQLite history, in the temporary directory.
package func temporarySQLitePath() -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("herald-\(UUID().uuidString).db").path
}

/// Removes a closed SQLite history: its file, and the WAL and shared-memory files beside it.
package func removeSQLiteFiles(_ path: String) {
    for file in [path, path + "-wal", path + "-shm"] { try? FileManager.default.removeItem(atPath: file) }
}

/// The size of the file at `path` in bytes, 0 when there is none.
package func fileBytes(_ path: String) -> Int {
    ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
}
