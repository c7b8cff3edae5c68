// Apollo Client (the library code-generated clients wrap) against a running
// threadstore: operations declared the way graphql-codegen declares them,
// every optional variable declared and left out. Usage:
//   node apollo.mjs http://127.0.0.1:PORT/graphql
// Exits non-zero, printing what went wrong, on any GraphQL error.
import { ApolloClient, HttpLink, InMemoryCache, gql, split } from '@apollo/client/core/index.js';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions/index.js';
import { getMainDefinition } from '@apollo/client/utilities/index.js';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const url = process.argv[2];
if (!url) {
  console.error('usage: node apollo.mjs http://host:port/graphql');
  process.exit(2);
}
const thread = `apollo-${process.pid}-${Date.now()}`;

const ws = createClient({ url: url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, lazy: false });
const link = split(
  ({ query }) => {
    const def = getMainDefinition(query);
    return def.kind === 'OperationDefinition' && def.operation === 'subscription';
  },
  new GraphQLWsLink(ws),
  new HttpLink({ uri: url, fetch }),
);
const client = new ApolloClient({ link, cache: new InMemoryCache(), defaultOptions: { query: { fetchPolicy: 'no-cache' } } });

const SAVE = gql`
  mutation Save($input: MessageCreate!) {
    saveMessage(input: $input) { id threadId content createdAt cursor persisted }
  }`;
const PAGE = gql`
  query Page($id: ID!, $limit: Int, $offset: Int, $order: MessageOrder) {
    thread(id: $id) { id messageCount messages(limit: $limit, offset: $offset, order: $order) { id content cursor } }
  }`;
const CONNECTION = gql`
  query Connection($id: ID!, $first: Int, $after: String, $last: Int, $before: String) {
    thread(id: $id) {
      id
      messageConnection(first: $first, after: $after, last: $last, before: $before) {
        edges { cursor node { id content } }
        pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
      }
    }
  }`;
const SAVED = gql`
  subscription Saved($threadId: ID!, $after: String) {
    messageSaved(threadId: $threadId, after: $after) { id content cursor }
  }`;

function fail(what, detail) {
  console.error(`apollo client: ${what}:`, typeof detail === 'string' ? detail : JSON.stringify(detail));
  process.exit(1);
}

function expect(cond, what, detail) {
  if (!cond) fail(what, detail);
}

async function save(content) {
  const r = await client.mutate({ mutation: SAVE, variables: { input: { threadId: thread, role: 'USER', content } } });
  expect(r.data?.saveMessage?.content === content, 'save', r);
  return r.data.saveMessage;
}

// The contents of the first `count` events of a messageSaved subscription.
function collect(variables, count) {
  return new Promise((resolve, reject) => {
    const seen = [];
    const timeout = setTimeout(() => {
      sub.unsubscribe();
      reject(new Error(`${seen.length} of ${count} events within 10 s: ${seen}`));
    }, 10_000);
    const sub = client.subscribe({ query: SAVED, variables }).subscribe({
      next: (r) => {
        if (r.errors) reject(new Error(JSON.stringify(r.errors)));
        seen.push(r.data.messageSaved.content);
        if (seen.length === count) {
          clearTimeout(timeout);
          sub.unsubscribe();
          resolve(seen);
        }
      },
      error: (e) => {
        clearTimeout(timeout);
        reject(e);
      },
    });
  });
}

async function main() {
  // Optional variables declared and omitted: the schema's defaults apply.
  const empty = await client.query({ query: PAGE, variables: { id: thread } });
  expect(empty.data.thread.messageCount === 0 && empty.data.thread.messages.length === 0, 'empty page', empty);

  const saved = [];
  for (const text of ['one', 'two', 'three']) saved.push(await save(text));

  const page = await client.query({ query: PAGE, variables: { id: thread } });
  expect(page.data.thread.messages.map((m) => m.content).join() === 'one,two,three', 'default page', page.data);
  // Explicit nulls mean the defaults too.
  const nulls = await client.query({
    query: PAGE,
    variables: { id: thread, limit: null, offset: null, order: null },
  });
  expect(nulls.data.thread.messages.length === 3, 'page with null variables', nulls.data);
  const newest = await client.query({ query: PAGE, variables: { id: thread, limit: 2, order: 'NEWEST_FIRST' } });
  expect(newest.data.thread.messages.map((m) => m.content).join() === 'three,two', 'newest two', newest.data);

  const conn = await client.query({ query: CONNECTION, variables: { id: thread } });
  const edges = conn.data.thread.messageConnection.edges;
  expect(edges.length === 3 && edges[0].cursor === saved[0].cursor, 'connection with every argument omitted', conn.data);
  const next = await client.query({ query: CONNECTION, variables: { id: thread, first: 1, after: saved[0].cursor } });
  expect(next.data.thread.messageConnection.edges[0].node.content === 'two', 'connection page', next.data);

  // A subscription with its optional cursor omitted: live from now on
  // (probes are saved until one arrives), then one resumed with `after:`
  // replays what followed the cursor.
  const live = collect({ threadId: thread }, 1);
  const probes = setInterval(() => save('probe').catch((e) => fail('probe save', String(e))), 200);
  const first = await live.catch((e) => fail('live subscription', String(e)));
  clearInterval(probes);
  expect(first[0] === 'probe', 'live event', first);

  const replayed = await collect({ threadId: thread, after: saved[0].cursor }, 2).catch((e) =>
    fail('resumed subscription', String(e)),
  );
  expect(replayed.join() === 'two,three', 'replay after a cursor', replayed);

  // A client mistake is a client error, never INTERNAL_SERVER_ERROR.
  try {
    await client.query({ query: PAGE, variables: { id: thread, order: 'SIDEWAYS' } });
    fail('unknown enum value', 'accepted');
  } catch (e) {
    const codes = (e.graphQLErrors ?? []).map((x) => x.extensions?.code);
    const net = e.networkError?.result?.errors?.map((x) => x.extensions?.code) ?? [];
    const all = [...codes, ...net];
    expect(all.length > 0 && !all.includes('INTERNAL_SERVER_ERROR'), 'unknown enum value', { codes: all, message: e.message });
  }

  await ws.dispose();
  console.log(`apollo client: ok (thread ${thread})`);
}

main().catch((e) => fail('unexpected', e?.stack ?? String(e)));
