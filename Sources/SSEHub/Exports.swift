//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

// `import SSEHub` is enough to configure heartbeats and read events.
@_exported public import SSECore
@_exported public import SSENIO
