// Convene browser SDK (placeholder; see issue 4).
export async function joinRoom() {
  throw new Error('not implemented yet');
}
