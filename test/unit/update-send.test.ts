import { ServiceError } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { sendUpdate } from '../../api/services/update-rejections.js';

// An update the server dropped with its failed workflow task never reached history: it is sent
// again under the same update id; every other error is the caller's to map.
const dropped = () => new ServiceError('Workflow Update failed', { cause: Object.assign(new Error('9 FAILED_PRECONDITION: Unable to perform workflow execution update due to unexpected workflow task failure.'), { code: 9 }) });

describe('sendUpdate', () => {
  it('sends a dropped update again under the same id, and answers with the send that landed', async () => {
    const ids: string[] = [];
    const result = await sendUpdate(async (id) => {
      ids.push(id);
      if (ids.length < 3) throw dropped();
      return 'granting';
    }, 'decision-1');
    expect(result).toBe('granting');
    expect(ids).toEqual(['decision-1', 'decision-1', 'decision-1']);
  });

  it('gives up after three sends and passes the error on', async () => {
    let sends = 0;
    await expect(sendUpdate(async () => {
      sends++;
      throw dropped();
    })).rejects.toBeInstanceOf(ServiceError);
    expect(sends).toBe(3);
  });

  it('never resends a refusal or any other failure, and makes up one id when none is given', async () => {
    const ids: string[] = [];
    const refusal = new Error('not an assigned approver of the open stage');
    await expect(sendUpdate(async (id) => {
      ids.push(id);
      throw refusal;
    })).rejects.toBe(refusal);
    expect(ids).toHaveLength(1);
    expect(ids[0]).toMatch(/^[0-9a-f-]{36}$/);
  });
});
