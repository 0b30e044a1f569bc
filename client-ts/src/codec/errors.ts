import { Code } from '../codes.js';

/**
 * The bytes are not a valid frame. `code` is what to send back in Close/Reject
 * (1002 bad_frame, or 1003 too_large); `check` names the rule that failed, in the words of
 * fixtures/wire/README.md ("known frame kind", "target inside the body", "valid UTF-8", ...).
 */
export class DecodeError extends Error {
  readonly code: number;
  readonly check: string;
  constructor(check: string, code: number = Code.badFrame) {
    super('invalid peerd frame: rule "' + check + '" broken');
    this.name = 'DecodeError';
    this.code = code;
    this.check = check;
  }
}

/** A value the protocol cannot carry (wrong type, integer out of range, body over 2 GiB - 1). */
export class EncodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EncodeError';
  }
}
