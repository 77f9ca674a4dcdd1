/** The code of the ProtocolError `fn` throws, or 'no error'; any other throw escapes. */
import { ProtocolError } from '../../protocol/errors.js';

export function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof ProtocolError) return err.code;
    throw err;
  }
  return 'no error';
}
