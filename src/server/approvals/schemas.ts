/** Approvals on the wire: the organization's policy (`/api/v1/settings/approvals`). */
import { type Static, Type } from 'typebox';
import { Tag } from '../devices/schemas.ts';

export const ApprovalPolicy = Type.Object(
  {
    required: Type.Boolean({ description: 'deployments need the approval of an admin of another person' }),
    min_devices: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 1_000_000,
        description: 'only deployments taking at least this many devices',
      }),
    ),
    tags: Type.Optional(
      Type.Array(Tag, {
        minItems: 1,
        maxItems: 32,
        uniqueItems: true,
        description: 'only deployments that select or take a device carrying one of these tags',
      }),
    ),
  },
  { additionalProperties: false },
);
export type ApprovalPolicy = Static<typeof ApprovalPolicy>;
