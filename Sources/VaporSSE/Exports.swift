//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

// `import VaporSSE` is enough to build events and keep-alive settings.
@_exported public import SSECore
@_exported public import SSENIO
