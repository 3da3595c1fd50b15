"""Drives `loopsy mcp serve` with the official MCP Python SDK and prints what it saw as JSON.

usage: sdk_client.py PROTOCOL_VERSION PLAN_JSON COMMAND [ARGS...]
The plan lists tool calls ({"name", "arguments"}); every resource is read, every prompt got.
"""
import asyncio
import json
import sys

import mcp.client.session as client_session
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


async def main() -> None:
    version, plan, command, args = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4:]
    # The SDK asks for its newest version; ask for the one under test instead.
    client_session.LATEST_HANDSHAKE_VERSION = version
    params = StdioServerParameters(command=command, args=args)
    out = {"calls": [], "resources": {}, "prompts": {}}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out["protocolVersion"] = init.protocol_version
            out["serverName"] = init.server_info.name
            tools = await session.list_tools()
            out["tools"] = sorted(tool.name for tool in tools.tools)
            out["schemas"] = {tool.name: tool.input_schema for tool in tools.tools}
            for call in plan:
                result = await session.call_tool(call["name"], call.get("arguments", {}))
                text = "".join(c.text for c in result.content if c.type == "text")
                out["calls"].append({"name": call["name"], "isError": bool(result.is_error), "text": text})
            for resource in (await session.list_resources()).resources:
                contents = await session.read_resource(resource.uri)
                out["resources"][str(resource.uri)] = contents.contents[0].text
            for prompt in (await session.list_prompts()).prompts:
                arguments = {a.name: "bob" for a in (prompt.arguments or [])}
                got = await session.get_prompt(prompt.name, arguments)
                out["prompts"][prompt.name] = got.messages[0].content.text
            out["templates"] = len((await session.list_resource_templates()).resource_templates)
            await session.send_ping()
            out["ping"] = True
    print(json.dumps(out))


asyncio.run(main())
