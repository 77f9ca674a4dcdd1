/**
 * The one key a mailbox (a user's device) goes by in the relay's maps: the connected
 * streams, a batch's mailboxes, the catch-up's answers. User ids are printable ASCII and
 * device ids [A-Za-z0-9_-], so the NUL between them cannot occur in either.
 */
export function mailboxKey(userId: string, deviceId: string): string {
  return `${userId}\u0000${deviceId}`;
}
