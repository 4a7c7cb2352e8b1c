/** Organizations and keys on the wire. */
import { Type } from 'typebox';
import { Nullable } from '../infra/schemas.ts';

/** `GET /api/v1/me`: who the key is. */
export const Me = Type.Object({
  role: Type.Union([
    Type.Literal('system_admin'),
    Type.Literal('admin'),
    Type.Literal('operator'),
    Type.Literal('viewer'),
  ]),
  organization: Nullable(Type.Object({ id: Type.String(), name: Type.String() })),
  key: Type.Object({
    id: Type.String(),
    name: Nullable(Type.String()),
    owner: Nullable(Type.String({ description: 'the person who holds the key (approvals: the two-person rule)' })),
  }),
});
