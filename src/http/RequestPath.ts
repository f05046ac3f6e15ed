/** The request target's path, without the query string: every listener routes on the exact path. */
export const pathOf = (url: string | undefined): string => {
  if (url === undefined) return ""
  const query = url.indexOf("?")
  return query === -1 ? url : url.slice(0, query)
}
