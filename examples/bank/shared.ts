/** What the bank example's coordinator (run.ts) and its workers (worker.ts) share. */
export const PAYMENTS_TOPIC = 'bank-a.payments';
export const LEDGER_GROUP = 'bank-b-ledger';

/** What a worker asks of the coordinator, and what it tells it. */
export type WorkerRequest =
  | { readonly type: 'token'; readonly id: number }
  | { readonly type: 'link'; readonly id: number; readonly code: string }
  | { readonly type: 'apply'; readonly id: number; readonly payment: PaymentFields; readonly deliveries: number }
  | { readonly type: 'ready' }
  | { readonly type: 'stopped'; readonly handled: number };

export interface PaymentFields {
  readonly eventId: string;
  readonly from: string;
  readonly to: string;
  readonly amountCents: number;
  readonly jws: string;
}

/** A worker's request without its id (the id is added when it is sent). */
export type WorkerAsk = WorkerRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

export type CoordinatorMessage = { readonly type: 'answer'; readonly id: number; readonly value?: string; readonly error?: string } | { readonly type: 'stop' };

