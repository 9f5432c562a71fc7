export declare function joinRoom(token: string, options?: Record<string, unknown>): Promise<unknown>;
