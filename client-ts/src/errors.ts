import { codeName } from './codes.js';

/**
 * A failure that carries a peerd code (Status, RpcError, Reject or Close; 4000-4999 are the
 * application's), so callers branch on `code` rather than on message text.
 */
export class PeerdError extends Error {
  readonly code: number;
  /** The wire name of `code` (`method_not_found`, `app_4001`, ...). */
  readonly codeName: string;
  constructor(code: number, message?: string, name?: string, cause?: unknown) {
    super(message || codeName(code), { cause });
    this.code = code;
    this.codeName = name ?? codeName(code);
  }
}

/**
 * The link dropped (or the peer was closed) while this was pending, so no answer will come.
 * Not a wire code: code 0, codeName `disconnected`; `cause` holds why the link ended.
 */
export class DisconnectedError extends PeerdError {
  constructor(message = 'disconnected', cause?: unknown) {
    super(0, message, 'disconnected', cause);
  }
}

/**
 * A send made while the link was down (reconnecting, draining) that the reconnect queue did
 * not take or did not keep; it was never sent. Code 0 (not a wire code); `codeName`
 * `queue_full`: the queue held its most frames or bytes already, or `queue_timeout`: no link
 * came back within the queue's time bound.
 */
export class QueueError extends PeerdError {}

// On the prototype rather than as a field: one assignment instead of one per instance.
PeerdError.prototype.name = 'PeerdError';
DisconnectedError.prototype.name = 'DisconnectedError';
QueueError.prototype.name = 'QueueError';
